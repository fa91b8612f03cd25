//! Streamed text as it arrives (a delta), before it is stored: shown live by whoever watches its
//! session, in this process or another. Ephemeral by design: the stored message catches up at
//! the next flush, so a delta that never arrives costs a moment's liveness, never text.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveDelta {
    pub session: Uuid,
    /// The message's seq in the transcript.
    pub seq: i64,
    /// The part's index in the message.
    pub part: usize,
    pub text: String,
}
