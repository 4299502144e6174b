//! SentDM v3 client, webhook signing and local simulator.
