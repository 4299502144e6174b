//! The real `graphagent` binary, run as a process the way its users run it.

mod cli;
mod replicas;
mod sentdm;
mod session;
