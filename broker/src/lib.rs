//! tern-broker
