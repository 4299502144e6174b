//! graphagent host.
