//! The runtime: which agents and actions are loaded, their lifecycle (hooks on load,
//! reload and removal), their nodes in the graph, and typed lookup for agent code.
//!
//! **Architecture Invariant.** An instance is never mutated: a changed config builds a
//! new instance and swaps it in. Requests hold an `Arc` to the instance they started
//! with, so in-flight work finishes on the old one.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::config::{AgentFile, ConfigError, ConfigErrors};
use crate::graph::{Graph, GraphResult};
use crate::outbox::EventPublisher;
use crate::plugin::{
    ActionContext, ActionDirectory, ActionInfo, ActionStatus, ActionTypes, AgentInfo, HostInfo,
    ScopedKeys, Slot, State, action_id, agent_id,
};
use crate::time::now_rfc3339;

/// What a (re)load changed.
#[derive(Debug, Clone, Default, Serialize, ToSchema, PartialEq)]
pub struct ReloadReport {
    /// Ids of actions that were added (`on_register`).
    pub added: Vec<String>,
    /// Ids of actions whose config changed (`on_reload`).
    pub changed: Vec<String>,
    /// Ids of actions removed or disabled (`on_deregister`).
    pub removed: Vec<String>,
    /// Ids left as they were.
    pub unchanged: Vec<String>,
    /// Hook failures, `action id: message` (the actions still serve).
    pub hook_errors: Vec<String>,
}

/// Owns the loaded agents and actions.
pub struct Runtime {
    types: ActionTypes,
    graph: Graph,
    host: HostInfo,
    keys: Arc<dyn ScopedKeys>,
    events: EventPublisher,
    directory: ActionDirectory,
    config_path: Option<PathBuf>,
    /// Serialises loads so two reloads never interleave their hooks.
    load_lock: tokio::sync::Mutex<()>,
    /// Set once the first configuration has been applied (readiness).
    loaded: std::sync::atomic::AtomicBool,
}

const SCHEMA: &str = r#"
DEFINE TABLE IF NOT EXISTS agent SCHEMALESS;
DEFINE TABLE IF NOT EXISTS action SCHEMALESS;
DEFINE TABLE IF NOT EXISTS has_action TYPE RELATION IN agent OUT action;
DEFINE INDEX IF NOT EXISTS action_agent ON action FIELDS agent_id;
"#;

impl Runtime {
    /// A runtime with no agents loaded yet. Applies the host's and every action type's
    /// schema.
    pub(crate) async fn new(
        types: ActionTypes,
        graph: Graph,
        host: HostInfo,
        keys: Arc<dyn ScopedKeys>,
        events: EventPublisher,
        config_path: Option<PathBuf>,
    ) -> GraphResult<Self> {
        graph.apply_schema("host", SCHEMA).await?;
        for ty in types.all() {
            let schema = ty.schema();
            if !schema.trim().is_empty() {
                graph.apply_schema(ty.type_name(), schema).await?;
            }
        }
        Ok(Self {
            types,
            graph,
            host,
            keys,
            events,
            directory: ActionDirectory::default(),
            config_path,
            load_lock: tokio::sync::Mutex::new(()),
            loaded: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Typed lookup of loaded actions.
    pub fn directory(&self) -> &ActionDirectory {
        &self.directory
    }

    /// Whether a configuration has been applied (readiness).
    pub fn loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The registered action types.
    pub fn types(&self) -> &ActionTypes {
        &self.types
    }

    /// The config file or directory this runtime loads from.
    pub fn config_path(&self) -> Option<&PathBuf> {
        self.config_path.as_ref()
    }

    /// Re-read the config path and apply it.
    pub async fn reload_from_disk(&self) -> Result<ReloadReport, LoadError> {
        let Some(path) = &self.config_path else {
            return Ok(ReloadReport::default());
        };
        let files = crate::config::load_path(path).map_err(LoadError::Config)?;
        self.apply(files).await
    }

    /// Validate agent files against the registered types without loading anything.
    pub fn check(&self, files: &[AgentFile]) -> Result<(), ConfigErrors> {
        check_files(&self.types, files)
    }

    /// Apply a complete set of agent files: actions not in it are deregistered.
    /// Invalid files change nothing.
    pub async fn apply(&self, files: Vec<AgentFile>) -> Result<ReloadReport, LoadError> {
        let _guard = self.load_lock.lock().await;
        let mut desired = Vec::new();
        let mut errors = Vec::new();
        let mut agents = BTreeMap::new();
        for file in &files {
            match self.types.parse_all(&file.actions) {
                Err(mut e) => errors.append(&mut e),
                Ok(configs) => {
                    let agent_id = agent_id(&file.agent);
                    let mut action_ids = Vec::new();
                    for (decl, config) in file.actions.iter().zip(configs) {
                        if !(file.context.enabled && decl.enabled) {
                            continue;
                        }
                        let id = action_id(&file.agent, &decl.name);
                        action_ids.push(id.clone());
                        desired.push((file, decl, id, config));
                    }
                    agents.insert(
                        agent_id.clone(),
                        AgentInfo {
                            id: agent_id,
                            name: file.agent.clone(),
                            alias: file.context.alias.clone(),
                            enabled: file.context.enabled,
                            file: file.path.display().to_string(),
                            action_ids,
                        },
                    );
                }
            }
        }
        if !errors.is_empty() {
            return Err(LoadError::Config(ConfigErrors(errors)));
        }

        let current: BTreeMap<String, Slot> = self.directory.read().actions.clone();
        let mut report = ReloadReport::default();
        let desired_ids: HashSet<&String> = desired.iter().map(|(_, _, id, _)| id).collect();

        // Removed first, so a renamed action never has two live instances.
        for (id, slot) in &current {
            if desired_ids.contains(id) {
                continue;
            }
            let result = slot.instance.on_deregister().await;
            let status = hook_status("on_deregister", &result, "deregistered");
            if let Err(e) = &result {
                tracing::warn!(action.id = %id, error = %e, "on_deregister failed");
                report.hook_errors.push(format!("{id}: {e}"));
            }
            self.write_state(|s| {
                s.actions.remove(id);
            });
            self.persist_action(&slot.info_with(status)).await?;
            report.removed.push(id.clone());
        }

        for (file, decl, id, config) in desired {
            let previous = current.get(&id);
            if let Some(prev) = previous
                && prev.config_json == config.json
                && self.types.get(&decl.type_name).map(|t| t.type_name()) == Some(prev.type_name)
            {
                report.unchanged.push(id);
                continue;
            }
            let Some(ty) = self.types.get(&decl.type_name).cloned() else {
                continue; // parse_all already rejected unknown types
            };
            let agent_id = agent_id(&file.agent);
            let ctx = ActionContext {
                agent_id: agent_id.clone(),
                agent_name: file.agent.clone(),
                action_id: id.clone(),
                action_name: decl.name.clone(),
                graph: self.graph.clone(),
                host: self.host.clone(),
                keys: self.keys.clone(),
                directory: self.directory.downgrade(),
                events: self.events.clone(),
            };
            let (instance, erased) = match ty.create(ctx, &config) {
                Ok(built) => built,
                Err(e) => {
                    // A constructor failure is a config problem the type could not
                    // express in validate(); keep the old instance serving.
                    tracing::error!(action.id = %id, error = %e, "action could not be created");
                    report.hook_errors.push(format!("{id}: {e}"));
                    continue;
                }
            };
            let (hook, result) = match previous {
                Some(prev) => (
                    "on_reload",
                    instance.on_reload(prev.typed_config.as_ref()).await,
                ),
                None => ("on_register", instance.on_register().await),
            };
            if let Err(e) = &result {
                tracing::warn!(action.id = %id, hook, error = %e, "action hook failed; the action still serves");
                report.hook_errors.push(format!("{id}: {e}"));
            } else {
                tracing::info!(action.id = %id, action.type = ty.type_name(), hook, "action loaded");
            }
            let slot = Slot {
                agent_id,
                agent_name: file.agent.clone(),
                action_id: id.clone(),
                action_name: decl.name.clone(),
                type_name: ty.type_name(),
                config_json: config.json.clone(),
                typed_config: config.typed.clone(),
                instance,
                erased,
                status: hook_status(hook, &result, "registered"),
            };
            self.persist_action(&slot.info()).await?;
            self.write_state(|s| {
                s.actions.insert(id.clone(), slot);
            });
            if previous.is_some() {
                report.changed.push(id);
            } else {
                report.added.push(id);
            }
        }

        for agent in agents.values() {
            self.persist_agent(agent).await?;
        }
        self.write_state(|s| s.agents = agents);
        self.loaded
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(report)
    }

    /// Change the loaded state under its lock; every change is one insert or removal.
    fn write_state(&self, f: impl FnOnce(&mut State)) {
        let mut state = self
            .directory
            .state
            .write()
            .unwrap_or_else(|e| e.into_inner());
        f(&mut state);
    }

    // Both persist functions retry on conflict: replicas starting or reloading together
    // write the same agent and action rows at the same moment.
    async fn persist_agent(&self, agent: &AgentInfo) -> GraphResult<()> {
        self.graph
            .transaction(
                "UPSERT type::record('agent', $id) MERGE { name: $name, alias: $alias, enabled: $enabled, file: $file, updated_at: time::now() };",
                json!({"id": agent.id, "name": agent.name, "alias": agent.alias,
                       "enabled": agent.enabled, "file": agent.file}),
            )
            .await
            .map(|_| ())
    }

    async fn persist_action(&self, info: &ActionInfo) -> GraphResult<()> {
        self.graph
            .transaction(
                "BEGIN;
                 UPSERT type::record('agent', $agent_id) MERGE { name: $agent_name };
                 UPSERT type::record('action', $id) MERGE { name: $name, type_name: $type_name, agent_id: $agent_id, config: $config, status: $status, updated_at: time::now() };
                 INSERT RELATION INTO has_action { id: [$agent_id, $id], in: type::record('agent', $agent_id), out: type::record('action', $id) } ON DUPLICATE KEY UPDATE updated_at = time::now();
                 COMMIT;",
                json!({"id": info.id, "name": info.name, "type_name": info.type_name,
                       "agent_id": info.agent_id, "agent_name": info.agent_name,
                       "config": info.config, "status": info.status}),
            )
            .await
            .map(|_| ())
    }

    /// The shared graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }
}

fn hook_status(
    hook: &str,
    result: &Result<(), crate::plugin::ActionError>,
    ok_state: &str,
) -> ActionStatus {
    ActionStatus {
        state: match result {
            Ok(()) => ok_state.to_owned(),
            Err(_) if ok_state == "deregistered" => ok_state.to_owned(),
            Err(_) => "failed".to_owned(),
        },
        last_hook: Some(hook.to_owned()),
        last_error: result.as_ref().err().map(|e| e.to_string()),
        last_hook_at: Some(now_rfc3339()),
    }
}

/// Validate agent files against the registered types: unknown types, bad configs,
/// duplicate agent names.
pub(crate) fn check_files(types: &ActionTypes, files: &[AgentFile]) -> Result<(), ConfigErrors> {
    let mut errors: Vec<ConfigError> = Vec::new();
    for file in files {
        if let Err(mut e) = types.parse_all(&file.actions) {
            errors.append(&mut e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Why a load was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The configuration is invalid; nothing changed.
    #[error("{0}")]
    Config(ConfigErrors),
    /// The graph failed while recording the change.
    #[error("graph: {0}")]
    Graph(#[from] crate::graph::GraphError),
}
