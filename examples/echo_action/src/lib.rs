//! Echo action.
