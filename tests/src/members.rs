//! A member with personal notes: what the personal-data process tests send from one OS process
//! while another forgets the member.

use serde::{Deserialize, Serialize};
use sourceflow::personal::Personal;
use sourceflow::prelude::*;

/// A member and the notes kept about them, each personal data of the member.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Entity)]
#[entity(name = "test.Member")]
pub struct Member {
    /// Every note, in order.
    pub notes: Vec<Personal<String>>,
}

/// Keeps a note about a member.
#[derive(Debug, Clone, Serialize, Deserialize, Command)]
#[command(name = "test.AddNote")]
pub struct AddNote {
    /// The note, personal data of the member.
    pub note: Personal<String>,
}

/// The `i`-th note about `member`: a text that must never be stored in plaintext.
pub fn note(member: &str, i: u64) -> AddNote {
    AddNote {
        note: Personal::new(member, format!("secret note {i} about {member}")),
    }
}

/// The text every note's plaintext starts with.
pub const NOTE_TEXT: &str = "secret note ";

/// Keeps members' notes.
#[derive(Default)]
pub struct MemberSaga;

#[saga(entity = Member)]
impl MemberSaga {
    #[handles]
    async fn add_note(&self, member: &mut Member, cmd: &AddNote, _cx: &mut SagaContext) {
        member.notes.push(cmd.note.clone());
    }
}
