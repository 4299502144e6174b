//! The directory of loaded agents and actions: what the runtime writes on every load,
//! and the typed lookups (`get::<A>(id)`, agents by name) that handlers, agent code and
//! actions read. Actions hold it weakly ([`WeakDirectory`]), so an instance never keeps
//! the directory, and with it every instance, alive.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, Weak};

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{Action, LoadedAction, action_id};

/// Lifecycle state of one action, as shown by the API and stored on its node.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct ActionStatus {
    /// `registered` (loaded and serving), `failed` (loaded, last hook failed),
    /// or `deregistered` (removed or disabled).
    #[schema(example = "registered")]
    pub state: String,
    /// The last hook that ran: `on_register`, `on_reload` or `on_deregister`.
    pub last_hook: Option<String>,
    /// Its error, if it failed.
    pub last_error: Option<String>,
    /// When it ran (RFC 3339).
    pub last_hook_at: Option<String>,
}

/// One loaded action.
#[derive(Clone)]
pub(crate) struct Slot {
    pub(crate) agent_id: String,
    pub(crate) agent_name: String,
    pub(crate) action_id: String,
    pub(crate) action_name: String,
    pub(crate) type_name: &'static str,
    pub(crate) config_json: Value,
    pub(crate) typed_config: Arc<dyn Any + Send + Sync>,
    pub(crate) instance: Arc<dyn LoadedAction>,
    pub(crate) erased: Arc<dyn Any + Send + Sync>,
    pub(crate) status: ActionStatus,
}

/// One loaded agent.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AgentInfo {
    /// Stable id derived from the name.
    #[schema(example = "agt_6f1c0e5ab2d94c7e1a33")]
    pub id: String,
    /// `agent:` from agent.yaml.
    #[schema(example = "acme/notifier")]
    pub name: String,
    /// `context.alias`.
    pub alias: Option<String>,
    /// `context.enabled`.
    pub enabled: bool,
    /// The file it was loaded from.
    pub file: String,
    /// Ids of its loaded actions, in declaration order.
    pub action_ids: Vec<String>,
}

/// An action as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ActionInfo {
    /// Stable id derived from agent and action names.
    #[schema(example = "act_0c9d2e7f1b3a4c5d6e7f")]
    pub id: String,
    /// The action's name within its agent.
    pub name: String,
    /// Canonical type name.
    #[schema(example = "sentdm_broadcast")]
    pub type_name: String,
    /// The agent's id.
    pub agent_id: String,
    /// The agent's name.
    pub agent_name: String,
    /// The effective configuration (defaults filled in).
    #[schema(value_type = Object)]
    pub config: Value,
    /// Lifecycle status.
    pub status: ActionStatus,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) agents: BTreeMap<String, AgentInfo>,
    /// action id → slot
    pub(crate) actions: BTreeMap<String, Slot>,
}

/// Read-only, typed lookup of loaded actions. Cheap to clone; given to actions (to
/// find siblings) and to agent code.
#[derive(Clone, Default)]
pub struct ActionDirectory {
    pub(crate) state: Arc<RwLock<State>>,
}

impl ActionDirectory {
    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-written (every write
        // is a single insert/remove), so a poisoned lock is still usable.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The action with this id, if it is loaded and of type `A`.
    pub fn get<A: Action>(&self, action_id: &str) -> Option<Arc<A>> {
        let erased = self.read().actions.get(action_id)?.erased.clone();
        erased.downcast::<A>().ok()
    }

    /// Ids of loaded actions of type `A`.
    pub fn ids_of<A: Action>(&self) -> Vec<String> {
        self.read()
            .actions
            .values()
            .filter(|s| s.type_name == A::TYPE_NAME)
            .map(|s| s.action_id.clone())
            .collect()
    }

    /// The agent named or identified by `name_or_id`.
    pub fn agent(&self, name_or_id: &str) -> Option<AgentHandle> {
        let state = self.read();
        let info = state
            .agents
            .get(name_or_id)
            .or_else(|| state.agents.values().find(|a| a.name == name_or_id))?;
        Some(AgentHandle {
            info: info.clone(),
            directory: self.clone(),
        })
    }

    /// Every loaded agent.
    pub fn agents(&self) -> Vec<AgentInfo> {
        self.read().agents.values().cloned().collect()
    }

    /// One action's public description.
    pub fn action_info(&self, action_id: &str) -> Option<ActionInfo> {
        self.read().actions.get(action_id).map(Slot::info)
    }

    /// A handle that does not keep the directory alive (for action instances).
    pub fn downgrade(&self) -> WeakDirectory {
        WeakDirectory {
            state: Arc::downgrade(&self.state),
        }
    }

    /// The type-specific status of a loaded action.
    pub(crate) async fn action_extra_status(&self, action_id: &str) -> Option<Value> {
        let instance = self.read().actions.get(action_id)?.instance.clone();
        Some(instance.status().await)
    }

    /// Number of loaded actions.
    pub fn len(&self) -> usize {
        self.read().actions.len()
    }

    /// Whether no action is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Typed access to one agent's actions, for agent code:
/// `host.agent("acme/notifier")?.action::<SentDmBroadcast>()`.
#[derive(Clone)]
pub struct AgentHandle {
    info: AgentInfo,
    directory: ActionDirectory,
}

impl AgentHandle {
    /// The agent's description.
    pub fn info(&self) -> &AgentInfo {
        &self.info
    }

    /// The agent's first action of type `A`.
    pub fn action<A: Action>(&self) -> Option<Arc<A>> {
        self.info
            .action_ids
            .iter()
            .find_map(|id| self.directory.get::<A>(id))
    }

    /// The agent's action of type `A` with this name.
    pub fn action_named<A: Action>(&self, name: &str) -> Option<Arc<A>> {
        self.directory.get::<A>(&action_id(&self.info.name, name))
    }
}

impl Slot {
    pub(crate) fn info(&self) -> ActionInfo {
        ActionInfo {
            id: self.action_id.clone(),
            name: self.action_name.clone(),
            type_name: self.type_name.to_owned(),
            agent_id: self.agent_id.clone(),
            agent_name: self.agent_name.clone(),
            config: self.config_json.clone(),
            status: self.status.clone(),
        }
    }
}

impl Slot {
    pub(crate) fn info_with(&self, status: ActionStatus) -> ActionInfo {
        let mut info = self.info();
        info.status = status;
        info
    }
}

/// The directory as an action instance holds it: lookups work while the host runs and
/// find nothing once it is gone, and holding one keeps nothing alive.
#[derive(Clone, Default)]
pub struct WeakDirectory {
    state: Weak<RwLock<State>>,
}

impl WeakDirectory {
    /// The action with this id, if the host is running and it is loaded and of type `A`.
    pub fn get<A: Action>(&self, action_id: &str) -> Option<Arc<A>> {
        let state = ActionDirectory {
            state: self.state.upgrade()?,
        };
        state.get::<A>(action_id)
    }
}
