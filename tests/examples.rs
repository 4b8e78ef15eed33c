//! Every example runs to its end and exits 0 (`cargo test` builds them;
//! this runs them, each on a private redis-server it starts itself).

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>/examples/<name>`, beside this test's own binary
/// (`target/<profile>/deps/examples-...`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    profile_dir.join("examples").join(name)
}

#[test]
fn every_example_runs_to_its_end() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "rs").then(|| p.file_stem().unwrap().to_string_lossy().into())
        })
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    for name in names {
        let bin = example(&name);
        assert!(bin.exists(), "{} was not built", bin.display());
        let out = Command::new(&bin)
            .env_remove("MILLRACE_REDIS_URL")
            .env_remove("REDIS_URL")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {:?}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
