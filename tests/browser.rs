//! The dashboard in a real browser: headless Chromium driven through
//! chromedriver (WebDriver). The overview lists the topics and groups of a
//! live worker and its lag falls to 0; a payload that is HTML shows as
//! text (no element made of it); screenshots of each page go under
//! `target/screenshots/`.
//!
//! Needs `chromium` and `chromedriver` on `PATH` (Debian: `apt-get install
//! chromium chromium-driver`; `.ci/run` installs them).

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use millrace::{Client, Record, TopicSpec, Worker};
use support::serve::{Served, client, serve};

/// chromedriver in a process group of its own, killed with the browsers
/// it started when dropped (a failing test leaves no Chromium behind).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the group this test made; no memory involved.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// chromedriver on a free port, and a headless Chromium session through it.
async fn browser() -> (Killed, Browser) {
    let port = support::free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start chromedriver ({e}): apt-get install chromium chromium-driver")
        });
    let driver = Killed(driver);
    let url = format!("http://127.0.0.1:{port}");
    support::wait_until(Duration::from_secs(20), "chromedriver listening", || {
        let ok = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        async move { ok }
    })
    .await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900"]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&url)
        .await
        .expect("a Chromium session");
    (driver, client)
}

/// `millrace serve` with extra flags; the server (killed when dropped) and
/// the page's URL.
async fn serve_with(prefix: &str, extra: &[&str]) -> (Served, String) {
    let s = serve(&support::shared_url(), prefix, extra).await;
    let page = format!("{}/", s.base);
    (s, page)
}

/// Writes the page as it is now to `target/screenshots/<name>.png`.
async fn screenshot(b: &Browser, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = b.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// The element `at` once it is on the page, waiting up to `secs`.
async fn appear(b: &Browser, secs: u64, at: Locator<'_>) -> fantoccini::elements::Element {
    b.wait()
        .at_most(Duration::from_secs(secs))
        .for_element(at)
        .await
        .unwrap()
}

async fn text_of(b: &Browser, id: &str) -> String {
    b.find(Locator::Id(id)).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_follows_a_live_worker_and_payloads_show_as_text() {
    let prefix = support::unique_prefix("browser");
    let c = client(&prefix).await;
    c.create_topic(&TopicSpec::new("erp.v1.invoice.created", 4).unwrap())
        .await
        .unwrap();
    // A paused worker, so the page first sees lag, then sees it fall.
    c.create_group(
        "erp.v1.invoice.created",
        "pdf-report",
        &millrace::StartAt::Earliest,
    )
    .await
    .unwrap();
    c.pause_group("erp.v1.invoice.created", "pdf-report")
        .await
        .unwrap();
    let xss = "<img src=x onerror=window.__pwned=1>";
    for i in 0..20u32 {
        let data = serde_json::json!({"invoice": format!("inv-{i}"), "note": xss});
        c.publish_record(
            "erp.v1.invoice.created",
            Record::encode(&data)
                .unwrap()
                .key(format!("tenant-{}", i % 3)),
        )
        .await
        .unwrap();
    }
    let _w = Worker::builder(&c, "pdf-report")
        .handle_raw("erp.v1.invoice.created", |_m, _c| async { Ok(()) })
        .start()
        .await
        .unwrap();
    let (_serve, base) = serve_with(&prefix, &[]).await;
    let (_driver, b) = browser().await;
    b.goto(&base).await.unwrap();

    // The overview lists the topic and its group, lagging while paused.
    let lagging = "pdf-report: lag 20, pending 0, 1 member(s)";
    b.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::XPath(&format!(
            "//*[@id='overview']//div[contains(., '{lagging}')][span[@class='paused']]"
        )))
        .await
        .unwrap_or_else(|e| panic!("{e}: the overview shows {:?}", ""));
    let overview = text_of(&b, "overview").await;
    assert!(overview.contains("erp.v1.invoice.created"), "{overview}");
    screenshot(&b, "overview-lagging").await;
    // Resumed, the worker catches up and the page (refreshing by itself)
    // shows the lag fall to 0.
    c.resume_group("erp.v1.invoice.created", "pdf-report")
        .await
        .unwrap();
    b.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::XPath(
            "//*[@id='overview']//div[contains(., 'pdf-report: lag 0, pending 0, 1 member(s)')]",
        ))
        .await
        .unwrap();
    screenshot(&b, "overview").await;

    // A topic's messages, then one message: the payload is text.
    b.find(Locator::LinkText("erp.v1.invoice.created"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    appear(&b, 10, Locator::XPath("//*[@id='results']//td/a")).await;
    let detail = text_of(&b, "detail").await;
    assert!(
        detail.contains(xss),
        "the payload shows as written: {detail}"
    );
    screenshot(&b, "topic").await;
    let first = b
        .find(Locator::XPath("//*[@id='results']//td/a"))
        .await
        .unwrap();
    first.click().await.unwrap();
    appear(&b, 10, Locator::XPath("//*[@id='detail']//pre")).await;
    appear(
        &b,
        10,
        Locator::XPath("//*[@id='detail']//tr[td[1][.='pdf-report'] and td[2][.='done']]"),
    )
    .await;
    let shown = text_of(&b, "detail").await;
    assert!(shown.contains("onerror"), "{shown}");
    screenshot(&b, "message").await;
    let imgs = b.find_all(Locator::Css("img")).await.unwrap();
    assert!(imgs.is_empty(), "no element was made of a payload");
    let pwned = b
        .execute("return window.__pwned === undefined;", vec![])
        .await
        .unwrap();
    assert_eq!(pwned, serde_json::json!(true));
    // The control: the same text put in as HTML does make an element, so
    // the check above would see one.
    b.execute(
        "const d = document.createElement('div'); d.innerHTML = arguments[0]; document.body.appendChild(d);",
        vec![serde_json::json!(xss)],
    )
    .await
    .unwrap();
    assert_eq!(b.find_all(Locator::Css("img")).await.unwrap().len(), 1);
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_clicked_in_the_page_moves_dead_letters_back_and_read_only_shows_no_buttons() {
    let prefix = support::unique_prefix("browser-dlq");
    let c = client(&prefix).await;
    c.create_topic(&TopicSpec::new("mail", 1).unwrap())
        .await
        .unwrap();
    // The handler fails for good until the "fix" is deployed.
    let fixed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = fixed.clone();
    let w = Worker::builder(&c, "send")
        .handle_raw("mail", move |_m, _c| {
            let ok = f.load(std::sync::atomic::Ordering::SeqCst);
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(millrace::HandlerError::permanent("smtp rejected it"))
                }
            }
        })
        .start()
        .await
        .unwrap();
    for i in 0..3u32 {
        c.publish_record("mail", Record::encode(&i).unwrap())
            .await
            .unwrap();
    }
    support::wait_until(Duration::from_secs(20), "three dead letters", || {
        let c = c.clone();
        async move { c.dead_letters("mail", None, 10).await.unwrap().len() == 3 }
    })
    .await;
    fixed.store(true, std::sync::atomic::Ordering::SeqCst);

    let (_driver, b) = browser().await;
    // Read-only: the dead letters show, with no button and no checkbox.
    let (_ro, ro_base) = serve_with(&prefix, &["--read-only"]).await;
    b.goto(&ro_base).await.unwrap();
    appear(
        &b,
        20,
        Locator::XPath("//*[@id='overview']//td/a[text()='3']"),
    )
    .await
    .click()
    .await
    .unwrap();
    b.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath(
            "//*[@id='detail']//h2[contains(., 'Dead letters of mail (3)')]",
        ))
        .await
        .unwrap();
    assert!(b.find_all(Locator::Css("button")).await.unwrap().is_empty());
    assert!(b.find_all(Locator::Css("input")).await.unwrap().is_empty());
    screenshot(&b, "dead-letters-read-only").await;
    // One dead letter in full: its error and payload, still no button.
    b.find(Locator::XPath("//*[@id='detail']//td/a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    appear(
        &b,
        10,
        Locator::XPath("//*[@id='detail']//pre[contains(., 'smtp rejected it')]"),
    )
    .await;
    assert!(b.find_all(Locator::Css("button")).await.unwrap().is_empty());
    screenshot(&b, "dead-letter").await;

    // A server that takes changes: replay all to the group.
    let (_rw, base) = serve_with(&prefix, &[]).await;
    b.goto(&base).await.unwrap();
    appear(
        &b,
        20,
        Locator::XPath("//*[@id='overview']//td/a[text()='3']"),
    )
    .await
    .click()
    .await
    .unwrap();
    let replay = appear(
        &b,
        10,
        Locator::XPath("//button[text()='Replay all to their group']"),
    )
    .await;
    screenshot(&b, "dead-letters").await;
    assert_eq!(
        c.dead_letters("mail", None, 10).await.unwrap().len(),
        3,
        "nothing before the click"
    );
    replay.click().await.unwrap();
    appear(
        &b,
        10,
        Locator::XPath("//*[@id='notice'][text()='replayed 3']"),
    )
    .await;
    b.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath(
            "//*[@id='detail']//h2[contains(., 'Dead letters of mail (0)')]",
        ))
        .await
        .unwrap();
    assert!(c.dead_letters("mail", None, 10).await.unwrap().is_empty());
    // The group handles them again, with the fix.
    support::wait_until(
        Duration::from_secs(20),
        "the replayed messages handled",
        || {
            let (c, handled) = (c.clone(), w.stats().handled);
            async move {
                let g = c.describe_group("mail", "send").await.unwrap();
                g.lag == 0 && g.pending == 0 && handled == 3
            }
        },
    )
    .await;
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_reset_shows_its_preview_and_does_nothing_until_confirmed() {
    let prefix = support::unique_prefix("browser-reset");
    let c = client(&prefix).await;
    c.create_topic(&TopicSpec::new("ledger", 1).unwrap())
        .await
        .unwrap();
    for i in 0..5u32 {
        c.publish_record("ledger", Record::encode(&i).unwrap())
            .await
            .unwrap();
    }
    // The group handled everything, and its worker has left.
    let w = Worker::builder(&c, "audit")
        .handle_raw("ledger", |_m, _c| async { Ok(()) })
        .start()
        .await
        .unwrap();
    support::wait_until(Duration::from_secs(20), "handled", || {
        let c = c.clone();
        async move { c.describe_group("ledger", "audit").await.unwrap().lag == 0 }
    })
    .await;
    w.shutdown().await.unwrap();
    let lag = |c: Client| async move { c.describe_group("ledger", "audit").await.unwrap().lag };

    let (_serve, base) = serve_with(&prefix, &[]).await;
    let (_driver, b) = browser().await;
    b.goto(&base).await.unwrap();
    appear(&b, 20, Locator::LinkText("audit"))
        .await
        .click()
        .await
        .unwrap();
    appear(&b, 10, Locator::XPath("//button[text()='Preview reset']"))
        .await
        .click()
        .await
        .unwrap();
    appear(
        &b,
        10,
        Locator::XPath("//*[@id='reset-preview']//p[contains(., 'would leave lag 5')]"),
    )
    .await;
    screenshot(&b, "group-reset-preview").await;
    assert_eq!(lag(c.clone()).await, 0, "the preview changed nothing");
    b.find(Locator::XPath("//button[text()='Confirm reset']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    appear(
        &b,
        10,
        Locator::XPath("//*[@id='notice'][text()='reset to earliest: lag 5']"),
    )
    .await;
    assert_eq!(
        lag(c.clone()).await,
        5,
        "confirmed, the group will read all five again"
    );
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_through_the_form_unlocks_changes_made_with_the_csrf_header() {
    let prefix = support::unique_prefix("browser-login");
    let c = client(&prefix).await;
    c.create_topic(&TopicSpec::new("orders", 1).unwrap())
        .await
        .unwrap();
    c.create_group("orders", "billing", &millrace::StartAt::Earliest)
        .await
        .unwrap();
    let token = "correct-horse-battery-staple";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, token).unwrap();
    let (_serve, base) = serve_with(&prefix, &["--token-file", file.to_str().unwrap()]).await;
    let (_driver, b) = browser().await;

    // Signed out: the group shows, with no button; a link to sign in.
    b.goto(&format!("{base}#/group/orders/billing"))
        .await
        .unwrap();
    appear(
        &b,
        10,
        Locator::XPath("//*[@id='detail']//h2[contains(., 'Group billing')]"),
    )
    .await;
    assert!(
        b.find_all(Locator::Css("#detail button"))
            .await
            .unwrap()
            .is_empty()
    );
    b.find(Locator::LinkText("Sign in to make changes"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // A wrong token: the form says so.
    let field = appear(&b, 10, Locator::Id("token")).await;
    screenshot(&b, "login").await;
    field.send_keys("not-the-token-at-all").await.unwrap();
    b.find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    appear(&b, 10, Locator::Id("login-error")).await;
    // The right one: back on the page, signed in.
    b.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    b.find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    appear(
        &b,
        10,
        Locator::XPath("//*[@id='auth']//button[text()='Sign out']"),
    )
    .await;
    // The session cookie is HttpOnly: the page's script cannot read it.
    let cookies = b.execute("return document.cookie;", vec![]).await.unwrap();
    assert_eq!(cookies, serde_json::json!(""));
    b.goto(&format!("{base}#/group/orders/billing"))
        .await
        .unwrap();
    appear(&b, 10, Locator::XPath("//button[text()='Pause']"))
        .await
        .click()
        .await
        .unwrap();
    appear(&b, 10, Locator::XPath("//*[@id='notice'][text()='paused']")).await;
    assert!(c.is_group_paused("orders", "billing").await.unwrap());
    // Signed out, the buttons are gone again.
    b.find(Locator::XPath("//*[@id='auth']//button[text()='Sign out']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    appear(&b, 10, Locator::LinkText("Sign in to make changes")).await;
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_page_charts_searches_and_schedules_are_added_and_removed() {
    let prefix = support::unique_prefix("browser-search");
    let c = client(&prefix).await;
    c.create_topic(&TopicSpec::new("orders", 3).unwrap())
        .await
        .unwrap();
    c.create_group("orders", "billing", &millrace::StartAt::Earliest)
        .await
        .unwrap();
    let (_serve, base) = serve_with(&prefix, &["--sample-every", "300ms"]).await;
    // Published while the server samples: the chart has a rate to draw.
    for i in 0..60u32 {
        let data = serde_json::json!({"n": i, "cents": i * 100, "customer": {"id": i % 4}});
        c.publish_record(
            "orders",
            Record::encode(&data).unwrap().key(format!("c{}", i % 4)),
        )
        .await
        .unwrap();
        if i % 20 == 19 {
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }
    let (_driver, b) = browser().await;
    b.goto(&format!("{base}#/topic/orders")).await.unwrap();
    // Charts drawn by the page from the server's samples.
    appear(&b, 20, Locator::Css("#charts svg polyline")).await;
    // Search: a payload filter over the window.
    let filter = b.find(Locator::Id("search-filter")).await.unwrap();
    filter
        .send_keys("cents >= 5000 and customer.id = 1")
        .await
        .unwrap();
    b.find(Locator::XPath("//button[text()='Search']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let summary = b
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath(
            "//*[@id='results-summary'][contains(., 'match(es)')]",
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // 50..60 with customer 1: 53 and 57.
    assert!(summary.starts_with("2 match(es) among 60"), "{summary}");
    let rows = b.find_all(Locator::Css("#results td a")).await.unwrap();
    assert_eq!(rows.len(), 2);
    screenshot(&b, "search").await;

    // Schedules: added through the form, listed with next fires, removed.
    b.goto(&format!("{base}#/schedules")).await.unwrap();
    for (id, text) in [
        ("schedule-name", "nightly-report"),
        ("schedule-cron", "0 30 2 * * *"),
        ("schedule-tz", "Europe/Paris"),
        ("schedule-topic", "orders"),
        ("schedule-data", "{\"report\": \"daily\"}"),
    ] {
        appear(&b, 10, Locator::Id(id))
            .await
            .send_keys(text)
            .await
            .unwrap();
    }
    b.find(Locator::XPath("//button[text()='Add schedule']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    appear(
        &b,
        10,
        Locator::XPath(
            "//*[@id='detail']//tr[td[1][.='nightly-report'] and td[3][.='Europe/Paris']]",
        ),
    )
    .await;
    let list = c.list_schedules().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].data, serde_json::json!({"report": "daily"}));
    screenshot(&b, "schedules").await;
    b.find(Locator::XPath("//button[text()='Remove']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The confirm: dismissed, nothing happens; accepted, it goes.
    b.dismiss_alert().await.unwrap();
    assert_eq!(c.list_schedules().await.unwrap().len(), 1);
    b.find(Locator::XPath("//button[text()='Remove']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.accept_alert().await.unwrap();
    appear(
        &b,
        10,
        Locator::XPath("//*[@id='notice'][text()='removed nightly-report']"),
    )
    .await;
    assert!(c.list_schedules().await.unwrap().is_empty());
    b.close().await.unwrap();
}
