//! Message filters: the three calls of `wasmgate:plugin/message-filter`, with what the WIT
//! contract promises about their answers checked here (a broken answer is a failed call, held
//! against the breaker like a trap, and goes to the caller's fail policy).

use super::PluginError;
use super::bindings::wasmgate::plugin::message_types::{
    Action, Message, MessageDecision, Opcode, OpenDecision, SessionClose, SessionOpen,
};
use super::engine::PluginRole;
use super::handle::Plugin;
use super::instance::{Answer, Call};

/// Most actions in one message decision.
pub const MAX_ACTIONS: usize = 16;
/// Longest Close reason: a control frame's payload is at most 125 bytes, two of them the code
/// (RFC 6455 §5.5).
pub const MAX_CLOSE_REASON: usize = 123;

impl Plugin {
    /// Whether the component exports `wasmgate:plugin/message-filter`.
    pub fn is_message_filter(&self) -> bool {
        self.exports().filter.is_some()
    }

    /// Asks the filter whether a session may open. An accept's subprotocol is one the client
    /// offered and its state within `max_state_bytes`; a refusal's status is 400–599.
    pub async fn on_open(&self, session: &SessionOpen) -> Result<OpenDecision, PluginError> {
        self.require(
            self.is_message_filter(),
            PluginRole::MessageFilter.interface(),
        )?;
        let Answer::Open(decision) = self.call(Call::Open(session)).await? else {
            unreachable!("on-open answers with an open decision")
        };
        let invalid = match &decision {
            OpenDecision::Refuse(status) if !(400..=599).contains(status) => {
                Some(format!("refusal status {status} is not 400–599"))
            }
            OpenDecision::Refuse(_) => None,
            OpenDecision::Accept(accept) => {
                if let Some(p) = &accept.subprotocol
                    && !session.subprotocols.contains(p)
                {
                    Some(format!("subprotocol {p:?} is not one the client offered"))
                } else {
                    self.check_state(accept.state.len()).err()
                }
            }
        };
        match invalid {
            Some(reason) => Err(self.report_invalid_decision(reason)),
            None => Ok(decision),
        }
    }

    /// Asks the filter what becomes of one message, given the session's state.
    pub async fn on_message(
        &self,
        message: &Message,
        state: &[u8],
    ) -> Result<MessageDecision, PluginError> {
        self.require(
            self.is_message_filter(),
            PluginRole::MessageFilter.interface(),
        )?;
        let Answer::Message(decision) = self.call(Call::Message(message, state)).await? else {
            unreachable!("on-message answers with a message decision")
        };
        match check_message_decision(&decision, self.limits().max_message_bytes).and_then(|()| {
            match &decision.state {
                Some(s) => self.check_state(s.len()),
                None => Ok(()),
            }
        }) {
            Ok(()) => Ok(decision),
            Err(reason) => Err(self.report_invalid_decision(reason)),
        }
    }

    /// Tells the filter that a session ended.
    pub async fn on_close(&self, close: &SessionClose, state: &[u8]) -> Result<(), PluginError> {
        self.require(
            self.is_message_filter(),
            PluginRole::MessageFilter.interface(),
        )?;
        self.call(Call::Close(close, state)).await.map(|_| ())
    }

    fn check_state(&self, len: usize) -> Result<(), String> {
        let max = self.limits().max_state_bytes;
        if len > max {
            return Err(format!(
                "session state of {len} bytes is over the {max}-byte limit"
            ));
        }
        Ok(())
    }
}

/// What the WIT contract promises about a message decision: at most [`MAX_ACTIONS`] actions,
/// one `forward` at most, sent payloads adding up to `max_bytes` at most, text payloads in
/// UTF-8, and Close frames an endpoint may send.
pub fn check_message_decision(decision: &MessageDecision, max_bytes: usize) -> Result<(), String> {
    if decision.actions.len() > MAX_ACTIONS {
        return Err(format!("more than {MAX_ACTIONS} actions"));
    }
    let mut forwards = 0;
    let mut bytes = 0usize;
    for action in &decision.actions {
        match action {
            Action::Forward => forwards += 1,
            Action::Send(m) | Action::Answer(m) => {
                bytes = bytes.saturating_add(m.payload.len());
                if m.opcode == Opcode::Text && std::str::from_utf8(&m.payload).is_err() {
                    return Err("a text message's payload is not UTF-8".into());
                }
            }
            Action::Close(c) => {
                if !sendable_close_code(c.code) {
                    return Err(format!("close code {} may not be sent", c.code));
                }
                if c.reason.len() > MAX_CLOSE_REASON {
                    return Err(format!(
                        "close reason of {} bytes is over {MAX_CLOSE_REASON}",
                        c.reason.len()
                    ));
                }
            }
        }
    }
    if forwards > 1 {
        return Err("more than one forward".into());
    }
    if bytes > max_bytes {
        return Err(format!(
            "messages of {bytes} bytes in all are over the {max_bytes}-byte limit"
        ));
    }
    Ok(())
}

/// RFC 6455 §7.4.1–7.4.2: the codes an endpoint may put in a Close frame (1004–1006 and 1015
/// are reserved, 1012–1014 registered later for servers, 3000–4999 for libraries and
/// applications).
pub fn sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}
