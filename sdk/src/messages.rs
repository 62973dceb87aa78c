//! WebSocket message filters: the [`MessageFilter`](crate::MessageFilter) trait's types, with
//! builders for the usual decisions.
//!
//! ```ignore
//! use wasmgate_sdk::{Message, MessageDecision, MessageFilter, Plugin};
//!
//! struct Shout;
//!
//! impl Plugin for Shout {
//!     fn init(_config: &str) -> Result<Self, String> {
//!         Ok(Shout)
//!     }
//! }
//!
//! impl MessageFilter for Shout {
//!     fn on_message(&self, message: Message, _state: Vec<u8>) -> MessageDecision {
//!         match std::str::from_utf8(&message.payload) {
//!             Ok(text) => MessageDecision::replace(wasmgate_sdk::Outgoing::text(text.to_uppercase())),
//!             Err(_) => MessageDecision::forward(),
//!         }
//!     }
//! }
//!
//! wasmgate_sdk::export_message_filter!(Shout);
//! ```

pub use crate::wit::wasmgate::plugin::message_types::{
    Accept, Action, CloseFrame, ClosedBy, Direction, Message, MessageDecision, Opcode,
    OpenDecision, Outgoing, SessionClose, SessionOpen,
};

impl Outgoing {
    pub fn text(text: impl Into<String>) -> Self {
        Outgoing {
            opcode: Opcode::Text,
            payload: text.into().into_bytes(),
        }
    }

    pub fn binary(payload: impl Into<Vec<u8>>) -> Self {
        Outgoing {
            opcode: Opcode::Binary,
            payload: payload.into(),
        }
    }
}

impl OpenDecision {
    /// Accepts the session with an empty state, forwarding the client's subprotocol offer.
    pub fn accept() -> Self {
        OpenDecision::Accept(Accept {
            subprotocol: None,
            state: Vec::new(),
        })
    }

    /// Accepts the session with this first state.
    pub fn accept_with_state(state: impl Into<Vec<u8>>) -> Self {
        OpenDecision::Accept(Accept {
            subprotocol: None,
            state: state.into(),
        })
    }

    /// Accepts the session, offering the backend only `subprotocol` (one the client offered).
    pub fn accept_subprotocol(subprotocol: impl Into<String>, state: impl Into<Vec<u8>>) -> Self {
        OpenDecision::Accept(Accept {
            subprotocol: Some(subprotocol.into()),
            state: state.into(),
        })
    }
}

impl MessageDecision {
    /// Relays the message unchanged.
    pub fn forward() -> Self {
        MessageDecision {
            actions: vec![Action::Forward],
            state: None,
        }
    }

    /// Drops the message.
    pub fn drop_message() -> Self {
        MessageDecision {
            actions: Vec::new(),
            state: None,
        }
    }

    /// Sends `message` to the destination instead.
    pub fn replace(message: Outgoing) -> Self {
        MessageDecision {
            actions: vec![Action::Send(message)],
            state: None,
        }
    }

    /// Drops the message and answers its sender.
    pub fn answer(message: Outgoing) -> Self {
        MessageDecision {
            actions: vec![Action::Answer(message)],
            state: None,
        }
    }

    /// Closes the session on both sides with `code` and `reason` (at most 123 bytes).
    pub fn close(code: u16, reason: impl Into<String>) -> Self {
        MessageDecision {
            actions: vec![Action::Close(CloseFrame {
                code,
                reason: reason.into(),
            })],
            state: None,
        }
    }

    /// Adds an action after those already there.
    pub fn and(mut self, action: Action) -> Self {
        self.actions.push(action);
        self
    }

    /// Sets the session's new state.
    pub fn with_state(mut self, state: impl Into<Vec<u8>>) -> Self {
        self.state = Some(state.into());
        self
    }
}
