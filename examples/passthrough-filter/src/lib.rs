//! A message filter that relays every message unchanged and keeps no state: what a filter costs
//! the gateway by itself (the WebSocket benchmarks and the Autobahn run through a filter use it).

use wasmgate_sdk::{Message, MessageDecision, MessageFilter, Plugin};

struct PassThrough;

impl Plugin for PassThrough {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(PassThrough)
    }
}

impl MessageFilter for PassThrough {
    fn on_message(&self, _message: Message, _state: Vec<u8>) -> MessageDecision {
        MessageDecision::forward()
    }
}

wasmgate_sdk::export_message_filter!(PassThrough);
