use super::access::is_set;
use super::rewrites::server_variable;
use super::*;
use crate::json::Value;

#[test]
fn server_variables_are_found() {
    assert_eq!(
        server_variable("x {var_client_ip} y"),
        Some("var_client_ip")
    );
    assert_eq!(server_variable("{http_req_Host}"), Some("http_req_Host"));
    assert_eq!(
        server_variable("{http_resp_Location}"),
        Some("http_resp_Location")
    );
    assert_eq!(server_variable("{\"json\": 1}"), None);
    assert_eq!(server_variable("plain"), None);
}

const GW: &str =
    "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/applicationGateways/gw";

/// A minimal gateway; `patch` replaces text in it to make each case.
fn base() -> String {
    format!(
        r#"{{
  "type": "Microsoft.Network/applicationGateways",
  "name": "gw",
  "properties": {{
    "frontendPorts": [ {{ "name": "p80", "properties": {{ "port": 80 }} }} ],
    "httpListeners": [ {{ "name": "l1", "properties": {{ "frontendPort": {{ "id": "{GW}/frontendPorts/p80" }}, "protocol": "Http" }} }} ],
    "backendAddressPools": [ {{ "name": "pool", "properties": {{ "backendAddresses": [ {{ "ipAddress": "10.0.0.1" }}, {{ "fqdn": "app.internal" }}, {{ "ipAddress": "2001:db8::1" }} ] }} }} ],
    "backendHttpSettingsCollection": [ {{ "name": "s1", "properties": {{ "port": 8080, "protocol": "Http" }} }} ],
    "requestRoutingRules": [ {{ "name": "r1", "properties": {{ "ruleType": "Basic", "httpListener": {{ "id": "{GW}/httpListeners/L1" }}, "backendAddressPool": {{ "id": "{GW}/backendAddressPools/pool" }}, "backendHttpSettings": {{ "id": "{GW}/backendHttpSettingsCollection/s1" }} }} }} ]
  }}
}}"#
    )
}

fn run(text: &str) -> Result<(String, Vec<Warning>), ArmError> {
    let node = crate::json::parse(text).expect("test JSON");
    let dir = std::env::temp_dir().join(format!(
        "wasmgate-arm-map-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut certs = CertWriter::new(dir.clone(), dir.clone());
    let m = map_gateway(
        "t.json",
        &node,
        "resources[0]",
        &Binding::default(),
        &mut certs,
        None,
    );
    let _ = std::fs::remove_dir_all(&dir);
    let m = m?;
    let doc = crate::emit::Doc {
        header: vec![],
        sections: m.sections,
    };
    Ok((doc.render(), m.warnings))
}

fn patched(from: &str, to: &str) -> Result<(String, Vec<Warning>), ArmError> {
    let text = base();
    assert!(text.contains(from), "base has no {from:?}");
    run(&text.replacen(from, to, 1))
}

fn refused(from: &str, to: &str, expected: &str) {
    let e = patched(from, to).expect_err(expected);
    assert!(
        e.to_string().contains(expected),
        "expected {expected:?} in {e}"
    );
    assert!(e.pos.is_some(), "{e} has no position");
}

#[test]
fn a_basic_gateway() {
    let (toml, warnings) = run(&base()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    for line in [
        "addresses = [\"10.0.0.1\", \"app.internal\", \"[2001:db8::1]\"]",
        "# no priority (v1): rules are taken in template order",
        "listener = \"l1\"",
        "bind_address = \"0.0.0.0\"",
        "# from resources[0].properties.requestRoutingRules[0]",
    ] {
        assert!(toml.contains(line), "{line:?} missing in\n{toml}");
    }
    let parsed: toml::Table = toml::from_str(&toml).unwrap();
    assert_eq!(parsed["rules"][0]["kind"].as_str(), Some("basic"));
}

#[test]
fn v1_authentication_certificates_only_matter_where_a_setting_uses_them() {
    // Carried along while every setting is HTTP: listed, not refused.
    let (_, warnings) = patched(
        "\"frontendPorts\"",
        "\"authenticationCertificates\": [ { \"name\": \"ase\", \"properties\": { \"data\": \"TUlJ\" } } ], \"frontendPorts\"",
    )
    .unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.path == "resources[0].properties.authenticationCertificates"),
        "{warnings:?}"
    );
    refused(
        "\"port\": 8080, \"protocol\": \"Http\"",
        &format!(
            "\"port\": 443, \"protocol\": \"Https\", \"authenticationCertificates\": [ {{ \"id\": \"{GW}/authenticationCertificates/ase\" }} ]"
        ),
        "backendHttpSettingsCollection[0].properties.authenticationCertificates: v1 backend authentication certificates (trusting exactly the backend's own certificate) are not supported",
    );
}

#[test]
fn exported_certificates_without_their_key_are_refused_with_the_reason() {
    refused(
        "\"protocol\": \"Http\" }",
        &format!(
            "\"protocol\": \"Https\", \"sslCertificate\": {{ \"id\": \"{GW}/sslCertificates/c\" }} }} }} ], \"sslCertificates\": [ {{ \"name\": \"c\", \"properties\": {{ \"publicCertData\": \"TUlJQw==\" }}"
        ),
        "sslCertificates[0].properties.data: the certificate has only \"publicCertData\"",
    );
}

#[test]
fn settings_and_probes() {
    let text = base()
        .replacen(
            "\"port\": 8080, \"protocol\": \"Http\"",
            &format!(
                "\"port\": 8080, \"protocol\": \"Http\", \"cookieBasedAffinity\": \"enabled\", \"connectionDraining\": {{ \"enabled\": true, \"drainTimeoutInSec\": 90 }}, \"probe\": {{ \"id\": \"{GW}/probes/hp\" }}, \"probeEnabled\": false }} }}, {{ \"name\": \"s2\", \"properties\": {{ \"port\": 80, \"probe\": {{ \"id\": \"{GW}/probes/HP\" }}, \"pickHostNameFromBackendAddress\": true"
            ),
            1,
        )
        .replacen(
            "\"frontendPorts\"",
            "\"probes\": [ { \"name\": \"hp\", \"properties\": { \"protocol\": \"Http\", \"path\": \"/health\", \"interval\": 5, \"unhealthyThreshold\": 2, \"match\": { \"statusCodes\": [\"200-299\", \"401\"], \"body\": \"ok\" } } } ], \"frontendPorts\"",
            1,
        );
    let (toml, warnings) = run(&text).unwrap();
    for line in [
        "cookie_based_affinity = true",
        "connection_draining = { enabled = true, timeout = 90 }",
        "probe = \"hp\"",
        "pick_host_name_from_backend_address = true",
        "match = { status_codes = [\"200-299\", \"401\"], body = \"ok\" }",
        "unhealthy_threshold = 2",
    ] {
        assert!(toml.contains(line), "{line:?} missing in\n{toml}");
    }
    // probeEnabled false on s1: its probe is listed as ignored, s2 keeps it.
    assert_eq!(toml.matches("probe = \"hp\"").count(), 1, "{toml}");
    assert!(
        warnings.iter().any(|w| w
            .path
            .ends_with("backendHttpSettingsCollection[0].properties.probe")),
        "{warnings:?}"
    );
}

#[test]
fn references_must_name_an_item_of_this_gateway() {
    refused(
        "applicationGateways/gw/httpListeners/L1",
        "applicationGateways/other/httpListeners/L1",
        "refers to application gateway 'other'",
    );
    refused(
        "httpListeners/L1",
        "frontendPorts/p80",
        "does not name a httpListeners item",
    );
    refused(
        "httpListeners/L1",
        "httpListeners/nope",
        "httpListener.id: there is no httpListeners item named 'nope'",
    );
    refused(
        "\"httpListener\": { \"id\"",
        "\"httpListener\": { \"ref\"",
        "httpListener: expected a reference",
    );
    refused(
        ", \"httpListener\": { \"id\": \"/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/applicationGateways/gw/httpListeners/L1\" }",
        "",
        "a rule needs \"httpListener\"",
    );
}

#[test]
fn invalid_items_are_refused_with_their_path() {
    refused(
        "{ \"name\": \"s1\"",
        "{ \"name\": \"POOL\" }, { \"name\": \"s1\"",
        "backendHttpSettingsCollection[0].properties.port: backend settings need \"port\"",
    );
    refused(
        "\"name\": \"l1\", \"properties\": {",
        "\"name\": \"l1\", \"properties\": { \"hostName\": \"a.com\", \"hostNames\": [\"b.com\"],",
        "give hostName or hostNames, not both",
    );
    refused(
        "\"protocol\": \"Http\" } } ],\n    \"backendAddressPools\"",
        "\"protocol\": \"Https\" } } ],\n    \"backendAddressPools\"",
        "an Https listener needs \"sslCertificate\"",
    );
    refused(
        "\"protocol\": \"Http\" } } ],\n    \"backendAddressPools\"",
        "\"protocol\": \"Ftp\" } } ],\n    \"backendAddressPools\"",
        "'Ftp' is not one of Http, Https",
    );
    refused(
        "{ \"port\": 80 }",
        "{ \"port\": 70000 }",
        "70000 is not a port",
    );
    refused(
        "{ \"port\": 80 }",
        "{ \"port\": \"80\" }",
        "frontendPorts[0].properties.port: expected an integer",
    );
    refused(
        "{ \"name\": \"pool\"",
        "{ \"name\": \"Pool\" }, { \"name\": \"pool\"",
        "the name 'pool' is already used by resources[0].properties.backendAddressPools[0]",
    );
    refused(
        "{ \"fqdn\": \"app.internal\" }",
        "{ }",
        "backendAddresses[1]: a backend address needs one of ipAddress or fqdn",
    );
    refused(
        "\"name\": \"gw\",",
        "\"name\": \"gw\", \"copy\": { \"count\": 2 },",
        "resources[0].copy: resource copy loops are not supported",
    );
    refused(
        "\"frontendPorts\"",
        "\"listeners\": [ { \"name\": \"tcp\" } ], \"frontendPorts\"",
        "properties.listeners: TCP/TLS (layer 4) proxying is not supported",
    );
    refused(
        "\"frontendPorts\"",
        "\"trafficMagic\": 1, \"frontendPorts\"",
        "properties.trafficMagic: not supported by wasmgate",
    );
    refused(
        "\"protocol\": \"Http\" } } ],\n    \"backendAddressPools\"",
        &format!(
            "\"protocol\": \"Https\", \"sslCertificate\": {{ \"id\": \"{GW}/sslCertificates/kv\" }} }} }} ], \"sslCertificates\": [ {{ \"name\": \"kv\", \"properties\": {{ \"keyVaultSecretId\": \"https://v/s\" }} }} ],\n    \"backendAddressPools\""
        ),
        "sslCertificates[0].properties.keyVaultSecretId: Key Vault certificates cannot be fetched outside Azure",
    );
    refused(
        "\"backendAddresses\": [",
        "\"backendIPConfigurations\": [ { \"id\": \"nic\" } ], \"backendAddresses\": [",
        "pool membership through network interfaces is not supported",
    );
}

#[test]
fn ignored_parts_are_listed_with_the_reason() {
    let (_, warnings) = patched(
        "\"frontendPorts\"",
        "\"sku\": { \"name\": \"WAF_v2\" }, \"webApplicationFirewallConfiguration\": { \"enabled\": true }, \"enableHttp2\": false, \"sslPolicy\": { \"minProtocolVersion\": \"TLSv1_0\" }, \"provisioningState\": \"Succeeded\", \"frontendPorts\"",
    )
    .unwrap();
    let paths: Vec<&str> = warnings.iter().map(|w| w.path.as_str()).collect();
    assert!(paths.contains(&"resources[0].properties.sku"), "{paths:?}");
    assert!(
        paths.contains(&"resources[0].properties.webApplicationFirewallConfiguration"),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"resources[0].properties.sslPolicy.minProtocolVersion"),
        "{paths:?}"
    );
    // false and read-only values configure nothing: not worth a warning.
    assert!(
        !paths
            .iter()
            .any(|p| p.contains("enableHttp2") || p.contains("provisioningState")),
        "{paths:?}"
    );
}

#[test]
fn redirects_and_rewrites() {
    let text = base()
        .replacen(
            &format!("\"backendAddressPool\": {{ \"id\": \"{GW}/backendAddressPools/pool\" }}, \"backendHttpSettings\": {{ \"id\": \"{GW}/backendHttpSettingsCollection/s1\" }}"),
            &format!("\"redirectConfiguration\": {{ \"id\": \"{GW}/redirectConfigurations/toSite\" }}"),
            1,
        )
        .replacen(
            "\"frontendPorts\"",
            "\"redirectConfigurations\": [ { \"name\": \"toSite\", \"properties\": { \"redirectType\": \"SeeOther\", \"targetUrl\": \"https://site\", \"includePath\": true, \"requestRoutingRules\": [ { \"id\": \"x\" } ] } } ],
    \"rewriteRuleSets\": [ { \"name\": \"rw\", \"properties\": { \"rewriteRules\": [
      { \"name\": \"cond\", \"ruleSequence\": 300, \"conditions\": [ { \"variable\": \"http_req_Accept\", \"pattern\": \"json\", \"ignoreCase\": false, \"negate\": true } ], \"actionSet\": { \"requestHeaderConfigurations\": [ { \"headerName\": \"X-C\", \"headerValue\": \"3\" } ] } },
      { \"name\": \"second\", \"ruleSequence\": 200, \"actionSet\": { \"requestHeaderConfigurations\": [ { \"headerName\": \"X-B\", \"headerValue\": \"2\" } ] } },
      { \"name\": \"first\", \"actionSet\": { \"requestHeaderConfigurations\": [ { \"headerName\": \"X-A\", \"headerValue\": \"1\" } ], \"responseHeaderConfigurations\": [ { \"headerName\": \"Server\" } ] } } ] } } ], \"frontendPorts\"",
            1,
        );
    assert!(text.contains("redirectConfigurations/toSite"));
    let (toml, _) = run(&text).unwrap();
    assert!(toml.contains("redirect_type = \"see_other\""), "{toml}");
    assert!(
        toml.contains("include_path = true\ninclude_query_string = false"),
        "{toml}"
    );
    // ruleSequence 100 (the default) before 200.
    let parsed: toml::Table = toml::from_str(&toml).unwrap();
    let request = parsed["rewrite_sets"][0]["request_headers"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = request
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["X-A", "X-B", "X-C"], "{toml}");
    // The rule's conditions go with its header rewrite.
    let c = &request[2]["conditions"][0];
    assert_eq!(c["variable"].as_str(), Some("http_req_Accept"));
    assert_eq!(c["ignore_case"].as_bool(), Some(false));
    assert_eq!(c["negate"].as_bool(), Some(true));
    assert!(request[0].get("conditions").is_none());
    assert!(
        toml.contains("response_headers = [{ name = \"Server\" }]"),
        "{toml}"
    );
}

#[test]
fn url_configurations_and_variables_take_the_rule_form() {
    let text = base().replacen(
        "\"frontendPorts\"",
        "\"rewriteRuleSets\": [ { \"name\": \"rw\", \"properties\": { \"rewriteRules\": [
      { \"name\": \"late\", \"ruleSequence\": 200, \"actionSet\": { \"responseHeaderConfigurations\": [ { \"headerName\": \"X-Ip\", \"headerValue\": \"{var_client_ip}\" } ] } },
      { \"name\": \"url\", \"conditions\": [ { \"variable\": \"var_uri_path\", \"pattern\": \"^/a/(.*)\" } ], \"actionSet\": { \"urlConfiguration\": { \"modifiedPath\": \"/b/{var_uri_path_1}\", \"modifiedQueryString\": \"\", \"reroute\": true } } } ] } } ], \"frontendPorts\"",
        1,
    );
    let (toml, _) = run(&text).unwrap();
    let parsed: toml::Table = toml::from_str(&toml).unwrap();
    let set = &parsed["rewrite_sets"][0];
    assert!(set.get("request_headers").is_none(), "{toml}");
    let rules = set["rules"].as_array().unwrap();
    // By ruleSequence: "url" (100, the default) before "late" (200).
    assert_eq!(rules[0]["name"].as_str(), Some("url"), "{toml}");
    assert_eq!(rules[0]["rule_sequence"].as_integer(), Some(100));
    let url = &rules[0]["url_configuration"];
    assert_eq!(url["modified_path"].as_str(), Some("/b/{var_uri_path_1}"));
    assert_eq!(
        url["modified_query_string"].as_str(),
        Some(""),
        "an empty query string is kept: it removes the query"
    );
    assert_eq!(url["reroute"].as_bool(), Some(true));
    assert_eq!(
        rules[0]["conditions"][0]["ignore_case"].as_bool(),
        Some(true),
        "Application Gateway's default"
    );
    assert_eq!(
        rules[1]["response_headers"][0]["value"].as_str(),
        Some("{var_client_ip}")
    );
}

#[test]
fn unexpressible_rewrites_are_refused() {
    let with_rules = |rules: &str| {
        base().replacen(
            "\"frontendPorts\"",
            &format!("\"rewriteRuleSets\": [ {{ \"name\": \"rw\", \"properties\": {{ \"rewriteRules\": [ {rules} ] }} }} ], \"frontendPorts\""),
            1,
        )
    };
    for (rules, expected) in [
        (
            "{ \"name\": \"m\", \"actionSet\": { \"responseHeaderConfigurations\": [ { \"headerName\": \"Location\", \"headerValueMatcher\": { \"pattern\": \"x\" } } ] } }",
            "headerValueMatcher: rewriting part of a header value",
        ),
        (
            "{ \"name\": \"c\", \"conditions\": [ { \"variable\": \"var_uri_path\" } ], \"actionSet\": {} }",
            "conditions[0].pattern: a condition needs \"pattern\"",
        ),
        (
            "{ \"name\": \"c\", \"conditions\": [ { \"variable\": \"var_uri_path\", \"pattern\": \"a\", \"matchAll\": true } ], \"actionSet\": {} }",
            "conditions[0].matchAll: not supported",
        ),
    ] {
        let e = run(&with_rules(rules)).expect_err(expected);
        assert!(
            e.to_string().contains(expected),
            "expected {expected:?} in {e}"
        );
    }
}

#[test]
fn https_listeners_share_certificates_and_agree_on_sni() {
    let pfx = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/arm/certs/contoso.pfx.b64"
    ))
    .unwrap();
    let listener = |name: &str, sni: bool| {
        format!(
            "{{ \"name\": \"{name}\", \"properties\": {{ \"frontendPort\": {{ \"id\": \"{GW}/frontendPorts/p443\" }}, \"protocol\": \"Https\", \"hostName\": \"{name}.contoso.com\", \"requireServerNameIndication\": {sni}, \"sslCertificate\": {{ \"id\": \"{GW}/sslCertificates/site\" }} }} }}"
        )
    };
    let text = base().replacen(
        "\"frontendPorts\": [",
        &format!(
            "\"sslCertificates\": [ {{ \"name\": \"site\", \"properties\": {{ \"data\": \"{}\", \"password\": \"fixture-password\" }} }} ], \"sslPolicy\": {{ \"minProtocolVersion\": \"TLSv1_3\" }}, \"frontendPorts\": [ {{ \"name\": \"p443\", \"properties\": {{ \"port\": 443 }} }},",
            pfx.trim()
        ),
        1,
    ).replacen(
        "\"httpListeners\": [",
        &format!("\"httpListeners\": [ {}, {},", listener("www", true), listener("api", false)),
        1,
    );
    let (toml, warnings) = run(&text).unwrap();
    assert_eq!(toml.matches("certificate = ").count(), 2, "{toml}");
    assert_eq!(
        toml.matches("site.crt.pem").count(),
        2,
        "one file for both listeners: {toml}"
    );
    assert_eq!(
        toml.matches("min_tls_version = \"1.3\"").count(),
        2,
        "{toml}"
    );
    assert!(!toml.contains("require_sni"), "{toml}");
    assert!(
        warnings.iter().any(|w| w
            .path
            .ends_with("httpListeners[0].properties.requireServerNameIndication")),
        "{warnings:?}"
    );

    let wrong = text.replacen("fixture-password", "wrong", 1);
    let e = run(&wrong).unwrap_err();
    assert!(
        e.to_string().contains(
            "sslCertificates[0].properties.data: not a PKCS#12 (PFX) bundle this password opens"
        ),
        "{e}"
    );
}

#[test]
fn unset_values() {
    let p = Default::default;
    assert!(!is_set(&Node::new(Value::Null, p())));
    assert!(!is_set(&Node::new(Value::Array(vec![]), p())));
    assert!(!is_set(&Node::new(Value::Bool(false), p())));
    assert!(is_set(&Node::new(Value::Int(0), p())));
    assert!(is_set(&Node::new(Value::String("x".into()), p())));
}

#[test]
fn ssl_profiles_and_error_pages_that_cannot_be_imported_are_refused_or_reported() {
    // An SSL profile on a plain HTTP listener.
    refused(
        "\"protocol\": \"Http\" }",
        &format!(
            "\"protocol\": \"Http\", \"sslProfile\": {{ \"id\": \"{GW}/sslProfiles/sp\" }} }} }} ], \"sslProfiles\": [ {{ \"name\": \"sp\", \"properties\": {{ \"trustedClientCertificates\": [ {{ \"id\": \"{GW}/trustedClientCertificates/ca\" }} ] }} }} ], \"trustedClientCertificates\": [ {{ \"name\": \"ca\", \"properties\": {{ \"data\": \"MAA=\" }}"
        ),
        "httpListeners[0].properties.sslProfile: an Http listener takes no SSL profile",
    );
    // A profile naming no trusted client CA.
    refused(
        "\"frontendPorts\"",
        "\"sslProfiles\": [ { \"name\": \"sp\", \"properties\": { \"clientAuthConfiguration\": { \"verifyClientCertIssuerDN\": true } } } ], \"frontendPorts\"",
        "sslProfiles[0].properties.trustedClientCertificates: an SSL profile with client authentication needs \"trustedClientCertificates\"",
    );
    // Trusted client CA data that is no certificate.
    refused(
        "\"frontendPorts\"",
        &format!(
            "\"sslProfiles\": [ {{ \"name\": \"sp\", \"properties\": {{ \"trustedClientCertificates\": [ {{ \"id\": \"{GW}/trustedClientCertificates/ca\" }} ] }} }} ], \"trustedClientCertificates\": [ {{ \"name\": \"ca\", \"properties\": {{ \"data\": \"AAAA\" }} }} ], \"frontendPorts\""
        ),
        "trustedClientCertificates[0].properties.data: not a certificate",
    );
    // A status that is no status.
    refused(
        "\"frontendPorts\"",
        "\"customErrorConfigurations\": [ { \"statusCode\": \"Teapot\", \"customErrorPageUrl\": \"https://x.example/p.html\" } ], \"frontendPorts\"",
        "customErrorConfigurations[0].statusCode: 'Teapot' is not a status",
    );
    // Without an error page folder the pages are reported; a status wasmgate never answers by
    // itself is reported whatever the folder.
    let (toml, warnings) = patched(
        "\"frontendPorts\"",
        "\"customErrorConfigurations\": [ { \"statusCode\": \"HttpStatus502\", \"customErrorPageUrl\": \"https://x.example/pages/502.html\" }, { \"statusCode\": \"HttpStatus405\", \"customErrorPageUrl\": \"https://x.example/405.html\" } ], \"frontendPorts\"",
    )
    .unwrap();
    assert!(!toml.contains("custom_error_pages"), "{toml}");
    let reasons: Vec<&str> = warnings.iter().map(|w| w.reason.as_str()).collect();
    assert!(
        reasons.contains(&"the 502 page at https://x.example/pages/502.html is not fetched; save it and import with --error-pages DIR (read as DIR/502.html)"),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"wasmgate never answers 405 itself, so no page replaces it"),
        "{reasons:?}"
    );
}
