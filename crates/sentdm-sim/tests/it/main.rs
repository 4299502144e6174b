//! The `sentdm-sim` binary as its users run it.

mod binary;
