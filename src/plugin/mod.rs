//! The action (plugin) contract: the [`Action`] trait an action type implements, the
//! [`ActionContext`] it is given, the state and extractors its routes use
//! ([`ActionState`], [`ActionRef`], …), the directory of loaded actions, and the
//! type-erased registry of action types.
//!
//! **API Boundary.** Actions see only this module (which re-exports the outbox types they
//! emit with), [`crate::Graph`] and the error type; never the host's own state. This module imports nothing from
//! the host's services or its HTTP layer.

mod directory;
mod extract;

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa_axum::router::OpenApiRouter;

use crate::config::{ActionDecl, ConfigError};
use crate::error::ApiResult;
use crate::graph::Graph;
pub use crate::outbox::{EventPublisher, EventType, INSERT_OUTBOX, OutboxEvent};
pub use directory::{
    ActionDirectory, ActionInfo, ActionStatus, AgentHandle, AgentInfo, WeakDirectory,
};
pub(crate) use directory::{Slot, State};
pub use extract::{ActionRef, ActionState, Json, Paging, Path, Query, read_body};

/// An error from an action's constructor or hook. Its message is shown in the
/// action's status, so it must not contain secrets.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ActionError(pub String);

impl ActionError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// A configuration problem found by [`Action::validate`], about one key of the
/// action's `context:` (e.g. `webhook_retry_count`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The key, relative to the action's `context:`; dotted for nested keys.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// What the host knows about the deployment, for actions that need it.
#[derive(Clone, Debug, Default)]
pub struct HostInfo {
    /// Public base URL of this server (`GRAPHAGENT_PUBLIC_BASE_URL`), no trailing slash.
    pub public_base_url: Option<String>,
}

/// Everything an action instance may use. Cheap to clone.
#[derive(Clone)]
pub struct ActionContext {
    /// Stable id of the agent this action belongs to.
    pub agent_id: String,
    /// The agent's name (`agent:` in agent.yaml).
    pub agent_name: String,
    /// Stable id of this action (derived from agent and action names).
    pub action_id: String,
    /// The action's name within its agent.
    pub action_name: String,
    /// The shared graph.
    pub graph: Graph,
    /// Deployment facts (public URL).
    pub host: HostInfo,
    /// Derives scoped machine keys (e.g. for a provider webhook URL).
    pub keys: Arc<dyn ScopedKeys>,
    /// Looks up sibling actions loaded in this process (and this action's own live
    /// instance, for background tasks). Weak: an instance never keeps the host alive.
    pub directory: WeakDirectory,
    /// Outbound event publisher (the webhook outbox).
    pub events: EventPublisher,
}

impl std::fmt::Debug for ActionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionContext")
            .field("agent_id", &self.agent_id)
            .field("action_id", &self.action_id)
            .field("action_name", &self.action_name)
            .finish_non_exhaustive()
    }
}

/// Credentials for machine callers, bound to a scope: derive one (e.g. for a provider's
/// webhook URL), or check one a caller presents.
#[async_trait]
pub trait ScopedKeys: Send + Sync {
    /// The key for `scope`, or `None` when the server has no stable secret to derive it.
    fn derive(&self, scope: &str) -> Option<String>;

    /// Check that `key` (derived or stored) grants `scope`: 401 when it is missing or not
    /// a valid key, 403 when it is valid for other scopes only.
    async fn authorize(&self, key: Option<&str>, scope: &str) -> ApiResult<()>;
}

/// An action type. Implement this, register the type with
/// [`crate::HostBuilder::action`], and declare instances in `agent.yaml`.
///
/// Lifecycle: the host deserializes and [`validate`](Action::validate)s the config,
/// calls [`create`](Action::create), then a hook: [`on_register`](Action::on_register)
/// when the action is loaded (start or reload), [`on_reload`](Action::on_reload) on the
/// *new* instance when its config changed, [`on_deregister`](Action::on_deregister) when
/// it is removed or disabled. A failing hook is logged and shown in the action's status;
/// the action still serves. Hooks may run again after a crash, so they must be idempotent.
#[async_trait]
pub trait Action: Send + Sync + Sized + 'static {
    /// Stable type name used in agent.yaml (`action: sentdm_broadcast`).
    const TYPE_NAME: &'static str;
    /// Other names accepted in agent.yaml (e.g. `jvagent/sentdm_broadcast_action`).
    const ALIASES: &'static [&'static str] = &[];
    /// Typed configuration, deserialized from the action's `context:`. Use
    /// `#[serde(deny_unknown_fields)]` so typos are reported with their line.
    type Config: DeserializeOwned + Serialize + Clone + Send + Sync + 'static;

    /// Range and cross-field checks beyond what the types express.
    fn validate(_config: &Self::Config) -> Vec<FieldError> {
        Vec::new()
    }

    /// SurrealQL this type needs (tables, indexes), applied once at start-up. Must be
    /// idempotent (`DEFINE … IF NOT EXISTS`).
    fn schema() -> &'static str {
        ""
    }

    /// Build an instance. No side effects outside the process here: hooks do that.
    fn create(ctx: ActionContext, config: Self::Config) -> Result<Self, ActionError>;

    /// Called when the action is loaded (at start or added by a reload).
    async fn on_register(&self) -> Result<(), ActionError> {
        Ok(())
    }

    /// Called on the new instance when the action's config changed.
    async fn on_reload(&self, _previous: &Self::Config) -> Result<(), ActionError> {
        self.on_register().await
    }

    /// Called when the action is removed from agent.yaml or disabled.
    async fn on_deregister(&self) -> Result<(), ActionError> {
        Ok(())
    }

    /// Routes mounted under `/api/actions/{action_id}`, admin-only. Paths must start
    /// with a segment naming the type (e.g. `/sentdm/...`) so types never collide;
    /// handlers find their instance with the [`ActionRef`] extractor.
    fn routes() -> OpenApiRouter<ActionState> {
        OpenApiRouter::new()
    }

    /// Routes mounted at the root (e.g. provider webhook receivers), which authenticate
    /// themselves (see [`ActionState::keys`]). Paths must carry the action id as a
    /// `{action_id}` parameter.
    fn public_routes() -> OpenApiRouter<ActionState> {
        OpenApiRouter::new()
    }

    /// Outbound event types this action type emits (added to the catalogue served by
    /// `GET /api/webhooks/event-types`; subscriptions may only name catalogued types).
    fn event_types() -> Vec<EventType> {
        Vec::new()
    }

    /// Type-specific status shown by `GET /api/actions/{id}`.
    async fn status(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// Object-safe view of a loaded instance, for the runtime.
#[async_trait]
pub(crate) trait LoadedAction: Send + Sync {
    async fn on_register(&self) -> Result<(), ActionError>;
    async fn on_reload(&self, previous: &(dyn Any + Send + Sync)) -> Result<(), ActionError>;
    async fn on_deregister(&self) -> Result<(), ActionError>;
    async fn status(&self) -> serde_json::Value;
}

struct Loaded<A: Action> {
    action: Arc<A>,
}

#[async_trait]
impl<A: Action> LoadedAction for Loaded<A> {
    async fn on_register(&self) -> Result<(), ActionError> {
        self.action.on_register().await
    }
    async fn on_reload(&self, previous: &(dyn Any + Send + Sync)) -> Result<(), ActionError> {
        match previous.downcast_ref::<A::Config>() {
            Some(previous) => self.action.on_reload(previous).await,
            // Same id but the type changed: treat as a fresh registration.
            None => self.action.on_register().await,
        }
    }
    async fn on_deregister(&self) -> Result<(), ActionError> {
        self.action.on_deregister().await
    }
    async fn status(&self) -> serde_json::Value {
        self.action.status().await
    }
}

/// A validated, typed config, erased.
pub(crate) struct ErasedConfig {
    pub(crate) typed: Arc<dyn Any + Send + Sync>,
    /// The config as the action's own type serializes it (defaults filled in); stored
    /// on the action node and compared to detect changes.
    pub(crate) json: serde_json::Value,
}

/// A new instance: the runtime's view of it and the typed value agent code downcasts.
pub(crate) type Created = (Arc<dyn LoadedAction>, Arc<dyn Any + Send + Sync>);

/// Object-safe view of an action type, for the registry.
pub(crate) trait ActionType: Send + Sync {
    fn type_name(&self) -> &'static str;
    fn schema(&self) -> &'static str;
    fn parse(&self, decl: &ActionDecl) -> Result<ErasedConfig, Vec<ConfigError>>;
    fn create(&self, ctx: ActionContext, config: &ErasedConfig) -> Result<Created, ActionError>;
    fn routes(&self) -> OpenApiRouter<ActionState>;
    fn public_routes(&self) -> OpenApiRouter<ActionState>;
    fn event_types(&self) -> Vec<EventType>;
}

struct TypeEntry<A>(std::marker::PhantomData<fn() -> A>);

impl<A: Action> ActionType for TypeEntry<A> {
    fn type_name(&self) -> &'static str {
        A::TYPE_NAME
    }
    fn schema(&self) -> &'static str {
        A::schema()
    }
    fn parse(&self, decl: &ActionDecl) -> Result<ErasedConfig, Vec<ConfigError>> {
        let config: A::Config = decl.typed().map_err(|e| vec![e])?;
        let problems = A::validate(&config);
        if !problems.is_empty() {
            return Err(problems
                .into_iter()
                .map(|p| decl.error_at(&format!("context.{}", p.key), p.message))
                .collect());
        }
        let json = serde_json::to_value(&config).map_err(|e| {
            vec![decl.error_at("context", format!("config does not serialize: {e}"))]
        })?;
        Ok(ErasedConfig {
            typed: Arc::new(config),
            json,
        })
    }
    fn create(&self, ctx: ActionContext, config: &ErasedConfig) -> Result<Created, ActionError> {
        let typed = config
            .typed
            .downcast_ref::<A::Config>()
            .ok_or_else(|| ActionError::new("config type mismatch"))?
            .clone();
        let action = Arc::new(A::create(ctx, typed)?);
        let erased: Arc<dyn Any + Send + Sync> = action.clone();
        Ok((Arc::new(Loaded { action }), erased))
    }
    fn routes(&self) -> OpenApiRouter<ActionState> {
        A::routes()
    }
    fn public_routes(&self) -> OpenApiRouter<ActionState> {
        A::public_routes()
    }
    fn event_types(&self) -> Vec<EventType> {
        A::event_types()
    }
}

/// The action types this host knows, by type name and alias.
#[derive(Clone, Default)]
pub struct ActionTypes {
    types: Vec<Arc<dyn ActionType>>,
    by_name: BTreeMap<&'static str, usize>,
}

/// Registering the same type name or alias twice.
#[derive(Debug, thiserror::Error)]
#[error("action type name `{0}` is registered twice")]
pub struct DuplicateType(pub &'static str);

impl ActionTypes {
    /// Add type `A` under its name and aliases.
    pub fn register<A: Action>(&mut self) -> Result<(), DuplicateType> {
        let entry: Arc<dyn ActionType> = Arc::new(TypeEntry::<A>(std::marker::PhantomData));
        let names: Vec<&'static str> = std::iter::once(A::TYPE_NAME)
            .chain(A::ALIASES.iter().copied())
            .collect();
        if let Some(dup) = names.iter().find(|n| self.by_name.contains_key(*n)) {
            return Err(DuplicateType(dup));
        }
        let idx = self.types.len();
        self.types.push(entry);
        for name in names {
            self.by_name.insert(name, idx);
        }
        Ok(())
    }

    /// Whether `name` (type name or alias) is known.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Canonical type names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.types.iter().map(|t| t.type_name()).collect();
        names.sort_unstable();
        names
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<dyn ActionType>> {
        self.by_name.get(name).map(|&i| &self.types[i])
    }

    pub(crate) fn all(&self) -> &[Arc<dyn ActionType>] {
        &self.types
    }

    /// Event types declared by the registered action types.
    pub fn event_types(&self) -> Vec<EventType> {
        self.types.iter().flat_map(|t| t.event_types()).collect()
    }

    /// Check every declaration's type and config; all problems, not just the first.
    pub(crate) fn parse_all(
        &self,
        decls: &[ActionDecl],
    ) -> Result<Vec<ErasedConfig>, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut parsed = Vec::with_capacity(decls.len());
        for decl in decls {
            match self.get(&decl.type_name) {
                None => errors.push(decl.error_at(
                    "action",
                    format!(
                        "unknown action type `{}`; known types: {}",
                        decl.type_name,
                        self.names().join(", ")
                    ),
                )),
                Some(ty) => match ty.parse(decl) {
                    Ok(cfg) => parsed.push(cfg),
                    Err(mut e) => errors.append(&mut e),
                },
            }
        }
        if errors.is_empty() {
            Ok(parsed)
        } else {
            Err(errors)
        }
    }
}

/// Stable id of an agent: derived from its name, so restarts keep it.
pub fn agent_id(agent_name: &str) -> String {
    format!("agt_{}", short_hash(&["agent", agent_name]))
}

/// Stable id of an action: derived from its agent's name and its own name, so a
/// restart does not change its webhook URL or orphan its records.
pub fn action_id(agent_name: &str, action_name: &str) -> String {
    format!("act_{}", short_hash(&["action", agent_name, action_name]))
}

fn short_hash(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefix each part so ("a/b","c") and ("a","b/c") never collide.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    digest[..10].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(action_id("acme/n", "sentdm"), action_id("acme/n", "sentdm"));
        assert_ne!(action_id("acme/n", "sentdm"), action_id("acme/m", "sentdm"));
        assert_ne!(action_id("a/b", "c"), action_id("a", "b/c"));
        assert!(agent_id("acme/n").starts_with("agt_"));
        assert_eq!(action_id("x", "y").len(), 4 + 20);
        // Pinned: changing the derivation would orphan every deployed action's records.
        assert_eq!(agent_id("acme/notifier"), agent_id("acme/notifier"));
    }
}
