//! The {{name}} router: requests with `x-beta: 1` go to the beta pool (named by the plugin's
//! `config` string), `/healthz` is answered by the gateway itself, and everything else is left
//! to the gateway's native rules.

use wasmgate_sdk::{Decision, Forward, Plugin, RequestHead, Router};

struct {{type}} {
    beta_pool: String,
}

impl Plugin for {{type}} {
    fn init(config: &str) -> Result<Self, String> {
        let beta_pool = config.trim();
        if beta_pool.is_empty() {
            return Err("config: the name of the beta pool is required".to_owned());
        }
        Ok({{type}} {
            beta_pool: beta_pool.to_owned(),
        })
    }
}

impl Router for {{type}} {
    fn route(&self, request: &RequestHead) -> Decision {
        if request.path == "/healthz" {
            return Decision::respond(200, "ok\n");
        }
        if request.header_str("x-beta") == Some("1") {
            return Forward::to(self.beta_pool.as_str(), "web")
                .set_header("x-routed-by", "{{name}}")
                .into();
        }
        Decision::Defer
    }
}

wasmgate_sdk::export_router!({{type}});

#[cfg(test)]
mod tests {
    use wasmgate_sdk::RequestHeader;

    use super::*;

    fn request<'a>(path: &'a str, headers: Vec<RequestHeader<'a>>) -> RequestHead<'a> {
        RequestHead {
            method: "GET",
            scheme: "http",
            authority: "shop.example",
            path,
            query: None,
            headers,
            client_address: "192.0.2.1:40000",
            listener: "http",
            websocket: false,
            tls_sni: None,
        }
    }

    #[test]
    fn beta_testers_go_to_the_beta_pool() {
        let router = {{type}}::init("beta").unwrap();
        let beta = RequestHeader {
            name: "x-beta",
            value: b"1",
        };
        let Decision::Forward(f) = router.route(&request("/cart", vec![beta])) else {
            panic!("expected a forward");
        };
        assert_eq!((f.pool.as_str(), f.settings.as_str()), ("beta", "web"));
        assert!(matches!(router.route(&request("/cart", vec![])), Decision::Defer));
    }

    #[test]
    fn an_empty_config_is_refused() {
        assert!({{type}}::init(" ").is_err());
    }
}
