//! Interactive transactions (`Graph::begin`) on every engine: what the SentDM fold
//! relies on for invariant 3 when it decides in Rust between its read and its writes.

use graphagent::{Graph, GraphOptions};
use serde_json::{Value, json};

/// Two transactions read the same record and both write it: the second to commit must
/// fail as a conflict, and the first one's write stands.
pub async fn second_writer_of_a_record_conflicts(g: &Graph) {
    g.query(
        "DEFINE TABLE IF NOT EXISTS t SCHEMALESS; UPSERT t:r SET n = 0;",
        Value::Null,
    )
    .await
    .expect("seed");
    let (a, b) = (g.begin().await.expect("a"), g.begin().await.expect("b"));
    for txn in [&a, &b] {
        let n = txn
            .query("SELECT VALUE n FROM t:r;", Value::Null)
            .await
            .expect("read");
        assert_eq!(n[0], json!([0]));
    }
    a.query("UPDATE t:r SET n = 1;", Value::Null)
        .await
        .expect("write a");
    let wrote_b = b.query("UPDATE t:r SET n = 2;", Value::Null).await;
    a.commit().await.expect("first commit wins");
    let second = match wrote_b {
        Ok(_) => b.commit().await,
        Err(e) => Err(e),
    };
    let err = second.expect_err("second writer must not commit");
    assert!(err.is_conflict(), "{}: {err:?}", g.url());
    let n = g
        .query("SELECT VALUE n FROM t:r;", Value::Null)
        .await
        .expect("n");
    assert_eq!(n[0], json!([1]), "{}", g.url());
}

#[tokio::test]
async fn interactive_transactions_conflict_in_memory() {
    second_writer_of_a_record_conflicts(&Graph::memory().await.expect("graph")).await;
}

#[tokio::test]
async fn interactive_transactions_conflict_on_surrealkv() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("surrealkv://{}", dir.path().join("g").display());
    let g = Graph::connect(&url, &GraphOptions::default())
        .await
        .expect("graph");
    second_writer_of_a_record_conflicts(&g).await;
}
