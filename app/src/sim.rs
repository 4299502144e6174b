//! `graphagent serve`, and `serve --sim`: the server against the SentDM simulator run in
//! this process, so the way from the demo to a running server is one command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use graphagent::{Action, HostBuilder, Settings};
use graphagent_sentdm::SentDmBroadcast;
use rand::distr::{Alphanumeric, SampleString};
use sentdm_sim::Simulator;
use serde_yaml::Value;

/// `graphagent serve`.
#[derive(Debug, Args)]
pub struct AppServeArgs {
    #[command(flatten)]
    pub host: graphagent::cli::ServeArgs,
    /// Run a SentDM simulator in this process on a loopback port and point every
    /// `sentdm_broadcast` action's `api_base` and `api_key` at it (printed at start).
    /// With no public base URL set, webhooks are sent to the bound address; with no JWT
    /// secret, one is drawn for this run. For trying things: no real message is sent.
    #[arg(long)]
    pub sim: bool,
}

/// Serve; with `--sim`, against a simulator that lives as long as the server.
pub async fn serve(args: AppServeArgs, builder: HostBuilder) -> ExitCode {
    if !args.sim {
        return graphagent::cli::serve(args.host, builder, |_| Ok(())).await;
    }
    let api_key = format!("sim_{}", Alphanumeric.sample_string(&mut rand::rng(), 24));
    let sim = match Simulator::builder()
        .api_key(api_key.clone())
        .step_delay(Duration::from_millis(500))
        .start()
        .await
    {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("graphagent: cannot start the SentDM simulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("graphagent: cannot make a directory for the simulator's agent files: {e}");
            return ExitCode::FAILURE;
        }
    };
    let base = sim.base_url();
    let code = graphagent::cli::serve(args.host, builder, |settings| {
        point_at_simulator(settings, dir.path(), &base, &api_key)
    })
    .await;
    sim.shutdown().await;
    code
}

/// Rewrite the configured agent files into `dir` with every SentDM action pointed at the
/// simulator, and fill in what the webhook round trip needs when it is unset.
fn point_at_simulator(
    settings: &mut Settings,
    dir: &Path,
    base: &str,
    api_key: &str,
) -> Result<(), String> {
    let config = settings
        .config_path
        .clone()
        .ok_or_else(|| "--sim needs an agent file (--config)".to_owned())?;
    // Check the user's own files first, so errors point at their lines, not the copy's.
    crate::host().check(&config).map_err(|e| e.to_string())?;
    let files = agent_files(&config)?;
    let mut overridden = 0;
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
        let mut doc: Value =
            serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        overridden += override_sentdm(&mut doc, base, api_key);
        let out = dir.join(file.file_name().unwrap_or(file.as_os_str()));
        let yaml = serde_yaml::to_string(&doc).map_err(|e| format!("{}: {e}", file.display()))?;
        std::fs::write(&out, yaml).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    settings.config_path = Some(if config.is_dir() {
        dir.to_path_buf()
    } else {
        dir.join(config.file_name().unwrap_or(config.as_os_str()))
    });
    if settings.public_base_url.is_none() {
        settings.public_base_url = Some(format!("http://{}", settings.bind));
    }
    if settings.auth.jwt_secret.is_none() {
        settings.auth.jwt_secret = Some(Alphanumeric.sample_string(&mut rand::rng(), 48).into());
    }
    tracing::info!(
        simulator = %base,
        actions = overridden,
        agent_files = %config.display(),
        "SentDM simulator started: every sentdm_broadcast action's api_base and api_key point \
         at it; reloads re-read the copy made now"
    );
    Ok(())
}

/// The agent files `config` names, by the host's rule: a file, or a directory's
/// non-hidden `*.yaml` / `*.yml` files.
fn agent_files(config: &Path) -> Result<Vec<PathBuf>, String> {
    if !config.is_dir() {
        return Ok(vec![config.to_path_buf()]);
    }
    let entries = std::fs::read_dir(config).map_err(|e| format!("{}: {e}", config.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("{}: {e}", config.display()))?
            .path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_file()
            && !name.starts_with('.')
            && (name.ends_with(".yaml") || name.ends_with(".yml"))
        {
            files.push(path);
        }
    }
    Ok(files)
}

/// Point the document's SentDM actions at the simulator; how many there were.
fn override_sentdm(doc: &mut Value, base: &str, api_key: &str) -> usize {
    let Some(actions) = doc.get_mut("actions").and_then(Value::as_sequence_mut) else {
        return 0;
    };
    let mut count = 0;
    for action in actions {
        let is_sentdm = action
            .get("action")
            .and_then(Value::as_str)
            .is_some_and(|t| {
                t == SentDmBroadcast::TYPE_NAME || SentDmBroadcast::ALIASES.contains(&t)
            });
        let Some(map) = action.as_mapping_mut().filter(|_| is_sentdm) else {
            continue;
        };
        let context = map
            .entry(Value::from("context"))
            .or_insert_with(|| Value::Mapping(serde_yaml::Mapping::new()));
        if context.is_null() {
            *context = Value::Mapping(serde_yaml::Mapping::new());
        }
        if let Some(context) = context.as_mapping_mut() {
            context.insert("api_base".into(), base.into());
            context.insert("api_key".into(), api_key.into());
            count += 1;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sentdm_actions_are_pointed_at_the_simulator() {
        let mut doc: Value = serde_yaml::from_str(
            "agent: a\nactions:\n  - action: sentdm_broadcast\n    context:\n      api_base: https://api.sent.dm\n  - action: jvagent/sentdm_broadcast_action\n    name: b\n  - action: echo\n    context: {}\n",
        )
        .expect("yaml");
        assert_eq!(override_sentdm(&mut doc, "http://127.0.0.1:9", "k"), 2);
        assert_eq!(
            doc["actions"][0]["context"]["api_base"],
            "http://127.0.0.1:9"
        );
        assert_eq!(doc["actions"][1]["context"]["api_key"], "k");
        assert!(doc["actions"][2]["context"].get("api_base").is_none());
    }
}
