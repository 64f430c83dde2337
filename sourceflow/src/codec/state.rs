//! Stored entity states and their schema version.
//!
//! An entity's stored state is a cache of its stream. When the entity type declares
//! `#[entity(version = N)]` with `N > 1`, the state is stored as
//! `{"$entity_version":N,"state":<the state's JSON>}` (still plain JSON, readable with
//! `sqlite3`/`psql`); a state of version 1 is stored as the state's JSON alone, as every state
//! was before entity versions existed. Reading a state whose stored version differs from the
//! type's, or that no longer decodes, is a cache miss: the runtime replays the stream and
//! rewrites the state. No store needs a schema change for it.

use super::{storable, ErasedState, StateVtable};

const PREFIX: &[u8] = br#"{"$entity_version":"#;
const STATE_KEY: &[u8] = br#","state":"#;

/// Why a stored entity state cannot be used.
#[derive(Debug)]
pub enum StateMiss {
    /// Stored by another `#[entity(version)]` of the type.
    Version {
        /// The version stored with the state.
        stored: u32,
        /// The version this build writes.
        known: u32,
    },
    /// The state no longer decodes as the type.
    Decode(serde_json::Error),
}

impl std::fmt::Display for StateMiss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateMiss::Version { stored, known } => write!(
                f,
                "stored by entity version {stored}, this build writes version {known}"
            ),
            StateMiss::Decode(e) => write!(f, "no longer decodes: {e}"),
        }
    }
}

/// The schema version a stored state was written with, and the state's own JSON.
pub fn split(bytes: &[u8]) -> (u32, &[u8]) {
    let Some(rest) = bytes.strip_prefix(PREFIX) else {
        return (1, bytes);
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let version = std::str::from_utf8(&rest[..digits])
        .ok()
        .and_then(|d| d.parse().ok());
    match (
        version,
        rest[digits..]
            .strip_prefix(STATE_KEY)
            .and_then(|s| s.strip_suffix(b"}")),
    ) {
        (Some(version), Some(state)) => (version, state),
        _ => (1, bytes),
    }
}

impl StateVtable {
    /// Encodes a state for storage, with its schema version when it is above 1.
    ///
    /// # Errors
    /// When the state cannot be stored as JSON that reads back identically.
    pub fn encode_stored(
        &self,
        state: &(dyn std::any::Any + Send),
    ) -> Result<Vec<u8>, storable::EncodeError> {
        let json = (self.encode)(state)?;
        if self.version == 1 {
            return Ok(json);
        }
        let version = self.version.to_string();
        let mut out =
            Vec::with_capacity(PREFIX.len() + version.len() + STATE_KEY.len() + json.len() + 1);
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(version.as_bytes());
        out.extend_from_slice(STATE_KEY);
        out.extend_from_slice(&json);
        out.push(b'}');
        Ok(out)
    }

    /// Decodes a stored state, or says why it is a cache miss.
    ///
    /// # Errors
    /// A `StateMiss` when the stored version differs from the type's or the state does not
    /// decode.
    pub fn decode_stored(&self, bytes: &[u8]) -> Result<ErasedState, StateMiss> {
        let (stored, json) = split(bytes);
        if stored != self.version {
            return Err(StateMiss::Version {
                stored,
                known: self.version,
            });
        }
        (self.decode)(json).map_err(StateMiss::Decode)
    }

    /// A stored state's JSON, if it was written by this version of the type.
    pub fn stored_json<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8], StateMiss> {
        let (stored, json) = split(bytes);
        if stored != self.version {
            return Err(StateMiss::Version {
                stored,
                known: self.version,
            });
        }
        Ok(json)
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn a_state_without_version_is_version_one() {
        assert_eq!(split(br#"{"balance":3}"#), (1, &br#"{"balance":3}"#[..]));
        assert_eq!(split(b"7"), (1, &b"7"[..]));
    }

    #[test]
    fn a_versioned_state_splits_into_version_and_state() {
        assert_eq!(
            split(br#"{"$entity_version":12,"state":{"balance":3}}"#),
            (12, &br#"{"balance":3}"#[..])
        );
        assert_eq!(
            split(br#"{"$entity_version":2,"state":"text"}"#),
            (2, &br#""text""#[..])
        );
    }

    #[test]
    fn a_malformed_header_is_read_as_a_plain_state() {
        let bytes = br#"{"$entity_version":x,"state":1}"#;
        assert_eq!(split(bytes), (1, &bytes[..]));
    }
}
