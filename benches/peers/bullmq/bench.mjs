#!/usr/bin/env node
// BullMQ peer benchmark for the millrace benchmark runner.
//
//   node bench.mjs --redis redis://127.0.0.1:PORT [--n 20000] [--reps 3]
//                  [--payload-bytes 100] [--latency-samples 1000] [--quick]
//                  [--timeout-s 300]
//
// Prints exactly one JSON object on stdout; everything else goes to stderr.
// Never flushes the database: every scenario/rep uses its own queue name and
// obliterates it afterwards, so the Redis may hold the caller's keys.

import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

// BullMQ and ioredis may log through console.log; keep stdout for the JSON.
console.log = console.error;
console.info = console.error;
const log = (...a) => console.error('[bullmq-bench]', ...a);

const require = createRequire(import.meta.url);
const BULLMQ_VERSION = require('bullmq/package.json').version;

// ---------------------------------------------------------------- options

function usage() {
  return [
    'usage: node bench.mjs --redis redis://HOST:PORT [--n N] [--reps R]',
    '                      [--payload-bytes B] [--latency-samples S] [--quick] [--timeout-s T]',
  ].join('\n');
}

function parseOptions(argv) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      redis: { type: 'string' },
      n: { type: 'string' },
      reps: { type: 'string' },
      'payload-bytes': { type: 'string' },
      'latency-samples': { type: 'string' },
      'timeout-s': { type: 'string' },
      quick: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.error(usage());
    process.exit(0);
  }
  if (!values.redis) throw new Error(`--redis is required\n${usage()}`);
  const int = (name, dflt, min) => {
    const raw = values[name];
    if (raw === undefined) return dflt;
    const v = Number(raw);
    if (!Number.isInteger(v) || v < min) throw new Error(`--${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
    return v;
  };
  const q = values.quick;
  return {
    redis: values.redis,
    n: int('n', q ? 2000 : 20000, 10),
    reps: int('reps', q ? 1 : 3, 1),
    payloadBytes: int('payload-bytes', 100, 0),
    latencySamples: int('latency-samples', q ? 200 : 1000, 1),
    timeoutMs: int('timeout-s', 300, 1) * 1000,
  };
}

// ---------------------------------------------------------------- helpers

// Short, unique queue names: BullMQ embeds the queue name in every job key, so a
// long name would inflate the memory-per-job figure versus real deployments.
const RUN_ID = Math.random().toString(36).slice(2, 8).padEnd(6, '0');
const openQueues = new Set();
const openWorkers = new Set();

function queueName(scenario, rep) {
  return `mrb-${RUN_ID}-${scenario}${rep}`;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

// Nearest-rank percentile on a sorted array.
function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

const round = (x, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

function withTimeout(promise, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000}s: ${what}`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

function makeQueue(ctx, name, extra = {}) {
  const q = new Queue(name, { connection: { url: ctx.opts.redis }, ...extra });
  q.on('error', (e) => log(`queue ${name} error:`, e.message));
  openQueues.add(q);
  return q;
}

function makeWorker(ctx, name, processor, extra = {}) {
  const w = new Worker(name, processor, {
    connection: { url: ctx.opts.redis, maxRetriesPerRequest: null },
    autorun: false,
    ...extra,
  });
  w.on('error', (e) => log(`worker ${name} error:`, e.message));
  openWorkers.add(w);
  return w;
}

async function closeWorker(w) {
  openWorkers.delete(w);
  await w.close();
}

async function dropQueue(q) {
  openQueues.delete(q);
  try {
    await q.obliterate({ force: true });
  } finally {
    await q.close();
  }
}

async function usedMemory(admin) {
  const info = await admin.info('memory');
  const m = /^used_memory:(\d+)/m.exec(info);
  if (!m) throw new Error('INFO memory has no used_memory field');
  return Number(m[1]);
}

async function prefill(queue, n, data, jobOpts) {
  const CHUNK = 1000;
  for (let i = 0; i < n; i += CHUNK) {
    const k = Math.min(CHUNK, n - i);
    const batch = new Array(k);
    for (let j = 0; j < k; j++) batch[j] = { name: 'j', data, opts: jobOpts };
    await queue.addBulk(batch);
  }
}

// ---------------------------------------------------------------- scenarios

// queue.add with `inflight` adds outstanding at all times.
async function scenarioAdd(ctx, rep) {
  const { n } = ctx.opts;
  const inflight = 100;
  const q = makeQueue(ctx, queueName('add', rep));
  try {
    await q.waitUntilReady();
    await q.add('warm', ctx.data); // loads the Lua scripts, creates the queue keys
    let next = 0;
    const lane = async () => {
      while (next < n) {
        next++;
        await q.add('j', ctx.data);
      }
    };
    const t0 = performance.now();
    await withTimeout(Promise.all(Array.from({ length: inflight }, lane)), ctx.opts.timeoutMs, 'add scenario');
    const secs = (performance.now() - t0) / 1000;
    return n / secs;
  } finally {
    await dropQueue(q);
  }
}

// Pre-fill `jobs` jobs, then time a worker (no-op processor) draining them.
async function scenarioWorker(ctx, rep, concurrency, jobs) {
  const name = queueName(`c${concurrency}-`, rep);
  const q = makeQueue(ctx, name);
  let w;
  try {
    await q.waitUntilReady();
    await prefill(q, jobs, ctx.data, { removeOnComplete: true });
    const counts = await q.getJobCounts('wait');
    if (counts.wait !== jobs) throw new Error(`prefill: expected ${jobs} waiting jobs, found ${counts.wait}`);

    w = makeWorker(ctx, name, async () => {}, { concurrency });
    let done = 0;
    let resolveDone, rejectDone;
    const allDone = new Promise((res, rej) => { resolveDone = res; rejectDone = rej; });
    w.on('completed', () => { if (++done === jobs) resolveDone(); });
    w.on('failed', (job, err) => rejectDone(new Error(`job ${job?.id} failed: ${err?.message}`)));
    await w.waitUntilReady();

    const t0 = performance.now();
    const running = w.run();
    running.catch((e) => rejectDone(e));
    await withTimeout(allDone, ctx.opts.timeoutMs, `worker c${concurrency} scenario (${done}/${jobs} done)`);
    const secs = (performance.now() - t0) / 1000;
    return jobs / secs;
  } finally {
    if (w) await closeWorker(w);
    await dropQueue(q);
  }
}

// Idle worker (concurrency 1); publish one job at a time, wait until it is
// completed plus a short gap (so the worker is back in its blocking wait),
// measure add-call start -> processor start.
async function scenarioLatency(ctx, rep) {
  const samples = ctx.opts.latencySamples;
  const warmup = Math.min(20, samples);
  const name = queueName('lat', rep);
  const q = makeQueue(ctx, name, { defaultJobOptions: { removeOnComplete: true } });
  let w;
  try {
    await q.waitUntilReady();
    const lat = [];
    let waiter = null;
    w = makeWorker(ctx, name, async (job) => {
      const dt = performance.now() - job.data.t0;
      if (!job.data.warm) lat.push(dt);
    }, { concurrency: 1 });
    w.on('completed', () => { const r = waiter; waiter = null; r?.resolve(); });
    w.on('failed', (job, err) => { const r = waiter; waiter = null; r?.reject(new Error(`latency job failed: ${err?.message}`)); });
    await w.waitUntilReady();
    const running = w.run();
    running.catch((e) => { const r = waiter; waiter = null; r?.reject(e); });
    await sleep(50);

    const one = async (warm) => {
      const p = new Promise((resolve, reject) => { waiter = { resolve, reject }; });
      const t0 = performance.now();
      await q.add('l', { t0, warm, data: ctx.data.data });
      await withTimeout(p, 30_000, 'latency job completion');
      await sleep(2);
    };
    for (let i = 0; i < warmup; i++) await one(true);
    for (let i = 0; i < samples; i++) await one(false);

    lat.sort((a, b) => a - b);
    return { p50: percentile(lat, 50), p99: percentile(lat, 99), p999: percentile(lat, 99.9) };
  } finally {
    if (w) await closeWorker(w);
    await dropQueue(q);
  }
}

// Fresh queue, no worker: used_memory delta for n waiting jobs, / n.
async function scenarioMemory(ctx, rep) {
  const { n } = ctx.opts;
  const name = queueName('mem', rep);
  const q = makeQueue(ctx, name);
  try {
    await q.waitUntilReady();
    // One job first so scripts are cached and the per-queue keys (meta, id
    // counter, events stream, wait list) exist: the delta is then per job.
    await q.add('warm', ctx.data);
    await sleep(100);
    const before = await usedMemory(ctx.admin);
    await prefill(q, n, ctx.data, undefined);
    const after = await usedMemory(ctx.admin);

    // Composition (for the stderr report only; MEMORY USAGE is an estimate).
    const prefix = `bull:${name}`;
    const sampleIds = [2, Math.floor(n / 2), n + 1];
    const hash = [];
    for (const id of sampleIds) hash.push(Number(await ctx.admin.memory('USAGE', `${prefix}:${id}`, 'SAMPLES', '0')) || 0);
    const waitList = Number(await ctx.admin.memory('USAGE', `${prefix}:wait`, 'SAMPLES', '0')) || 0;
    const events = Number(await ctx.admin.memory('USAGE', `${prefix}:events`, 'SAMPLES', '0')) || 0;
    const eventsLen = await ctx.admin.xlen(`${prefix}:events`);
    const breakdown = {
      job_hash_bytes: median(hash),
      job_hash_encoding: await ctx.admin.object('ENCODING', `${prefix}:${sampleIds[1]}`),
      wait_list_bytes_per_job: round(waitList / (n + 1)),
      events_stream_bytes: events,
      events_stream_len: eventsLen,
      events_stream_bytes_per_job: round(events / (n + 1)),
    };
    log(`memory rep ${rep}: delta ${after - before} B for ${n} jobs;`, JSON.stringify(breakdown));
    return { perJob: (after - before) / n, breakdown };
  } finally {
    await dropQueue(q);
  }
}

// ---------------------------------------------------------------- main

let adminClosing = false;

async function connectAdmin(url) {
  const admin = new IORedis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    connectTimeout: 5000,
    retryStrategy: () => null,
  });
  let lastError = null;
  admin.on('error', (e) => { lastError = e; }); // surfaced by connect()/commands
  try {
    await admin.connect();
    await admin.ping();
  } catch (e) {
    admin.disconnect();
    throw new Error(`cannot connect to Redis at ${url}: ${lastError?.message ?? e.message}`);
  }
  // The admin connection never reconnects: if it ends before we close it, the
  // Redis went away. Fail fast instead of letting BullMQ's clients retry forever.
  admin.on('end', () => {
    if (adminClosing) return;
    console.error(`bullmq bench: error: lost the connection to Redis at ${url}${lastError ? ` (${lastError.message})` : ''}`);
    process.exit(1);
  });
  return admin;
}

async function cleanup(admin) {
  for (const w of [...openWorkers]) {
    openWorkers.delete(w);
    await w.close(true).catch(() => {});
  }
  for (const q of [...openQueues]) {
    openQueues.delete(q);
    await q.obliterate({ force: true }).catch((e) => log(`could not obliterate ${q.name}: ${e.message}`));
    await q.close().catch(() => {});
  }
  if (admin) {
    adminClosing = true;
    await admin.quit().catch(() => admin.disconnect());
  }
}

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  const admin = await connectAdmin(opts.redis);
  const ctx = { opts, admin, data: { data: 'x'.repeat(opts.payloadBytes) } };
  try {
    const info = await admin.info('server');
    const redisVersion = /^redis_version:(\S+)/m.exec(info)?.[1] ?? 'unknown';
    log(`bullmq ${BULLMQ_VERSION}, node ${process.version}, redis ${redisVersion}; n=${opts.n} reps=${opts.reps} payload=${opts.payloadBytes}B latency-samples=${opts.latencySamples}`);

    const runs = { add_per_s: [], worker_c100_per_s: [], worker_c1_per_s: [], latency_ms: [], memory_bytes_per_job: [] };
    const c1Jobs = Math.max(1, Math.floor(opts.n / 10));
    const tStart = performance.now();
    for (let rep = 0; rep < opts.reps; rep++) {
      const r = (x) => round(x);
      let t = performance.now();
      runs.add_per_s.push(await scenarioAdd(ctx, rep));
      log(`rep ${rep}: add            ${r(runs.add_per_s.at(-1))} jobs/s (${r(performance.now() - t)} ms)`);
      t = performance.now();
      runs.worker_c100_per_s.push(await scenarioWorker(ctx, rep, 100, opts.n));
      log(`rep ${rep}: worker c100    ${r(runs.worker_c100_per_s.at(-1))} jobs/s (${r(performance.now() - t)} ms)`);
      t = performance.now();
      runs.worker_c1_per_s.push(await scenarioWorker(ctx, rep, 1, c1Jobs));
      log(`rep ${rep}: worker c1      ${r(runs.worker_c1_per_s.at(-1))} jobs/s over ${c1Jobs} jobs (${r(performance.now() - t)} ms)`);
      t = performance.now();
      runs.latency_ms.push(await scenarioLatency(ctx, rep));
      const l = runs.latency_ms.at(-1);
      log(`rep ${rep}: latency        p50 ${l.p50.toFixed(3)} p99 ${l.p99.toFixed(3)} p999 ${l.p999.toFixed(3)} ms (${r(performance.now() - t)} ms)`);
      t = performance.now();
      runs.memory_bytes_per_job.push((await scenarioMemory(ctx, rep)).perJob);
      log(`rep ${rep}: memory         ${r(runs.memory_bytes_per_job.at(-1))} B/job (${r(performance.now() - t)} ms)`);
    }
    log(`total ${round((performance.now() - tStart) / 1000, 2)} s`);

    const result = {
      add_per_s: round(median(runs.add_per_s)),
      worker_c100_per_s: round(median(runs.worker_c100_per_s)),
      worker_c1_per_s: round(median(runs.worker_c1_per_s)),
      latency_ms: {
        p50: round(median(runs.latency_ms.map((x) => x.p50)), 3),
        p99: round(median(runs.latency_ms.map((x) => x.p99)), 3),
        p999: round(median(runs.latency_ms.map((x) => x.p999)), 3),
      },
      memory_bytes_per_job: round(median(runs.memory_bytes_per_job)),
      bullmq_version: BULLMQ_VERSION,
      node_version: process.version,
      n: opts.n,
      reps: opts.reps,
    };
    await cleanup(admin);
    process.stdout.write(JSON.stringify(result) + '\n');
  } catch (e) {
    await withTimeout(cleanup(admin), 10_000, 'cleanup').catch((ce) => log(`cleanup failed: ${ce.message}`));
    throw e;
  }
}

try {
  await main();
  process.exitCode = 0;
  // Everything is closed; if some handle still keeps the loop alive, do not hang.
  setTimeout(() => {
    log('warning: event loop still busy 5 s after completion; forcing exit');
    process.exit(0);
  }, 5000).unref();
} catch (e) {
  console.error(`bullmq bench: error: ${e?.message ?? e}`);
  process.exit(1);
}
