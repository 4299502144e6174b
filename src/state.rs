//! The state every host handler shares, and the narrower parts handed to others:
//! [`ActionState`] to action routes, the auth service to the `Admin` extractor.

use std::sync::Arc;

use axum::extract::FromRef;

use crate::auth::Auth;
use crate::graph::Graph;
use crate::plugin::{ActionDirectory, ActionState, ScopedKeys};
use crate::runtime::Runtime;
use crate::webhooks::Webhooks;

/// State shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct HostState {
    inner: Arc<Shared>,
}

struct Shared {
    runtime: Arc<Runtime>,
    auth: Arc<Auth>,
    webhooks: Arc<Webhooks>,
    actions: ActionState,
}

impl HostState {
    pub(crate) fn new(runtime: Arc<Runtime>, auth: Arc<Auth>, webhooks: Arc<Webhooks>) -> Self {
        let keys: Arc<dyn ScopedKeys> = auth.clone();
        let actions = ActionState::new(runtime.directory().clone(), keys);
        Self {
            inner: Arc::new(Shared {
                runtime,
                auth,
                webhooks,
                actions,
            }),
        }
    }

    /// Outbound webhooks (subscriptions, deliveries).
    pub fn webhooks(&self) -> &Webhooks {
        &self.inner.webhooks
    }

    /// The shared graph.
    pub fn graph(&self) -> &Graph {
        self.inner.runtime.graph()
    }

    /// Typed lookup of loaded actions.
    pub fn directory(&self) -> &ActionDirectory {
        self.inner.runtime.directory()
    }

    /// Credentials checks (admin, scoped machine keys).
    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    pub(crate) fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }
}

/// What action routes run with: a part of the host's state, never all of it.
impl FromRef<HostState> for ActionState {
    fn from_ref(state: &HostState) -> Self {
        state.inner.actions.clone()
    }
}

/// What the `Admin` extractor needs.
impl FromRef<HostState> for Arc<Auth> {
    fn from_ref(state: &HostState) -> Self {
        state.inner.auth.clone()
    }
}
