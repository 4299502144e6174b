//! The `sentdm-sim` binary: `--help` documents every flag, and it serves the v3 API.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sentdm-sim");

#[tokio::test]
async fn help_documents_every_flag() {
    let out = Command::new(BIN).arg("--help").output().await.unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--bind",
        "--api-key",
        "--seed",
        "--step-delay-ms",
        "--manual-clock",
        "--no-read-receipts",
        "--retry-scale",
        "--subtype-key",
        "--no-event-id-header",
        "--no-event-type-header",
        "--no-early-unknown-fields",
        "--rate-limits",
        "--signing-secret-in-reads",
        "--allow-http-webhooks",
        "--delivery-timeout-cap-ms",
        "--auto-disable-after",
        "--org-api-key",
        "--org-profile",
        "--fault-duplicate",
        "--fault-reorder",
        "--fault-drop-rate",
        "--fault-drop-sub-type",
        "--fault-bad-signature-rate",
        "--fault-latency-ms",
        "--fault-api-error-rate",
        "--fault-api-rate-limit-rate",
        "--fault-retry-after-secs",
    ] {
        let line = help
            .lines()
            .skip_while(|l| !l.trim_start().starts_with(flag))
            .nth(1)
            .unwrap_or_default();
        assert!(
            !line.trim().is_empty(),
            "{flag} has no description in --help"
        );
    }
    let bad = Command::new(BIN)
        .args(["--fault-drop-rate", "2"])
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
}

#[tokio::test]
async fn binary_serves_the_api() {
    let mut child = Command::new(BIN)
        .args([
            "--bind",
            "127.0.0.1:0",
            "--api-key",
            "bin-key",
            "--seed",
            "3",
        ])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(i) = line.find("http://127.0.0.1:") {
                let url: String = line[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || ":/.".contains(*c))
                    .collect();
                return url;
            }
        }
        panic!("sentdm-sim exited without printing its address");
    })
    .await
    .expect("sentdm-sim started");
    let http = reqwest::Client::new();
    let ok = http
        .get(format!("{base}/v3/me"))
        .header("x-api-key", "bin-key")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let denied = http.get(format!("{base}/v3/me")).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    child.start_kill().unwrap();
    let _ = child.wait().await;
}
