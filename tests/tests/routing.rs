//! Routing: which listener takes a request, which path rule, redirects and header rewrites.

use wasmgate_tests::config::{basic_rule, listener, pool, settings, single_route};
use wasmgate_tests::*;

/// Starts one backend per name.
async fn backends(names: &[&str]) -> Vec<HttpBackend> {
    let mut out = Vec::new();
    for name in names {
        out.push(HttpBackend::start(name).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_site_listeners_are_chosen_before_the_basic_one() {
    let b = backends(&["basic", "exact", "wild", "single-char"]).await;
    let port = free_port();
    // The basic listener is written first: multi-site listeners must still be tried before it.
    // Without priorities, overlapping multi-site listeners go in the order written (the exact
    // one first here); `rule_priority_decides_among_multi_site_listeners` covers priorities.
    let mut toml = String::new();
    toml += &listener("basic", port, &[]);
    toml += &listener("exact", port, &["app.contoso.com"]);
    toml += &listener("wild", port, &["*.contoso.com"]);
    toml += &listener("single-char", port, &["api?.fabrikam.com"]);
    toml += &settings("settings", "");
    for (i, name) in ["basic", "exact", "wild", "single-char"].iter().enumerate() {
        toml += &pool(name, &[b[i].addr]);
        toml += &basic_rule(name, name, name, "settings", "");
    }
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "basic");
    assert_eq!(
        addr.port(),
        port,
        "listeners sharing a port share one socket"
    );

    let cases = [
        ("app.contoso.com", "exact", "an exact host name"),
        (
            "APP.Contoso.COM",
            "exact",
            "host names match case-insensitively",
        ),
        (
            "app.contoso.com:8080",
            "exact",
            "a Host with a port suffix matches the host name",
        ),
        (
            "shop.contoso.com",
            "wild",
            "'*' matches any run of characters",
        ),
        ("a.b.contoso.com", "wild", "'*' crosses dots"),
        (
            "api1.fabrikam.com",
            "single-char",
            "'?' matches one character",
        ),
        (
            "api12.fabrikam.com",
            "basic",
            "'?' matches exactly one character, so the basic listener takes it",
        ),
        (
            "other.example",
            "basic",
            "a host no multi-site listener claims goes to the basic listener",
        ),
        (
            "contoso.com",
            "basic",
            "'*.contoso.com' needs something before the dot",
        ),
    ];
    for (host, backend, semantic) in cases {
        assert_routed(addr, host, "/", backend, semantic).await;
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rule_priority_decides_among_multi_site_listeners() {
    let b = backends(&["star", "question", "www"]).await;
    for (star_priority, question_priority, winner) in [(20, 10, "question"), (10, 20, "star")] {
        let port = free_port();
        let mut toml = String::new();
        toml += &listener("star", port, &["*.contoso.com"]);
        toml += &listener("question", port, &["app?.contoso.com"]);
        toml += &listener("www", port, &["www.contoso.com"]);
        toml += &settings("settings", "");
        for (i, (name, priority)) in [
            ("star", star_priority),
            ("question", question_priority),
            ("www", 5),
        ]
        .iter()
        .enumerate()
        {
            toml += &pool(name, &[b[i].addr]);
            toml += &basic_rule(
                name,
                name,
                name,
                "settings",
                &format!("priority = {priority}"),
            );
        }
        let gw = start_gateway(&toml).await;
        let addr = listener_addr(&gw, "star");
        assert_routed(
            addr,
            "app1.contoso.com",
            "/",
            winner,
            &format!(
                "two listeners match; the rule with the lower priority number wins (star {star_priority}, question {question_priority})"
            ),
        )
        .await;
        assert_routed(
            addr,
            "shop.contoso.com",
            "/",
            "star",
            "only the '*' listener matches",
        )
        .await;
        assert_routed(
            addr,
            "www.contoso.com",
            "/",
            "www",
            "priority 5 beats the wildcard",
        )
        .await;
        gw.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_matching_listener_is_404() {
    let b = HttpBackend::start("only").await;
    let port = free_port();
    let mut toml = listener("site", port, &["a.example", "*.b.example"]);
    toml += &pool("pool", &[b.addr]);
    toml += &settings("settings", "");
    toml += &basic_rule("rule", "site", "pool", "settings", "");
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "site");

    assert_routed(addr, "a.example", "/", "only", "the listed host is served").await;
    for host in ["c.example", "b.example", "a.example.evil"] {
        let reply = get(addr, host, "/").await;
        assert_eq!(
            reply.status.as_u16(),
            404,
            "Host {host:?} matches no listener on the port: 404 expected, body {:?}",
            reply.text()
        );
    }
    assert_eq!(
        b.hits_under("/"),
        1,
        "requests matching no listener must not reach a backend"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn path_rules_first_match_case_insensitive_with_default() {
    let names = ["api", "special", "images", "img", "about", "default"];
    let b = backends(&names).await;
    let mut toml = listener("web", 0, &[]);
    for (i, name) in names.iter().enumerate() {
        toml += &pool(name, &[b[i].addr]);
    }
    toml += &settings("settings", "");
    toml += "[[rules]]\nname = \"paths\"\nlistener = \"web\"\nurl_path_map = \"map\"\n\n";
    toml += "[[url_path_maps]]\nname = \"map\"\ndefault_backend_pool = \"default\"\ndefault_backend_settings = \"settings\"\n\n";
    for (name, paths) in [
        ("api", r#""/api/*""#),
        // Never chosen for /api/special/...: the first match wins, not the longest.
        ("special", r#""/api/special/*""#),
        ("images", r#""/images/*""#),
        ("img", r#""/img*""#),
        ("about", r#""/about""#),
    ] {
        toml += &format!(
            "[[url_path_maps.path_rules]]\nname = {name:?}\npaths = [{paths}]\nbackend_pool = {name:?}\nbackend_settings = \"settings\"\n\n"
        );
    }
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");

    let cases = [
        ("/api/users", "api", "'/api/*' takes paths under /api/"),
        ("/API/Users", "api", "path matching ignores case"),
        (
            "/api/special/x",
            "api",
            "the first matching path rule in list order wins, not the longest",
        ),
        (
            "/images/logo.png",
            "images",
            "'/images/*' takes /images/...",
        ),
        ("/imgfoo", "img", "'/img*' is a plain prefix"),
        ("/img/x", "img", "'/img*' is a plain prefix"),
        ("/about", "about", "an exact path rule"),
        ("/ABOUT", "about", "an exact path rule ignores case"),
        (
            "/about/",
            "default",
            "an exact path rule does not take longer paths",
        ),
        (
            "/other?next=/api/x",
            "default",
            "the query is not part of the matched path",
        ),
        (
            "/nothing",
            "default",
            "unmatched paths go to the map's default",
        ),
        ("/", "default", "unmatched paths go to the map's default"),
    ];
    for (path, backend, semantic) in cases {
        let reply = assert_routed(addr, "paths.test", path, backend, semantic).await;
        assert_eq!(
            reply.header("x-seen-path"),
            Some(path),
            "{semantic}: the backend must receive the path and query unchanged"
        );
    }
    let reply = assert_routed(
        addr,
        "paths.test",
        "/api/search?q=Rust&page=2",
        "api",
        "a query does not stop a path rule matching",
    )
    .await;
    assert_eq!(
        reply.header("x-seen-path"),
        Some("/api/search?q=Rust&page=2"),
        "the query is forwarded to the backend"
    );
    assert_eq!(
        b[1].hits_under("/"),
        0,
        "the second, longer rule is shadowed by the first"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redirects_status_location_path_and_query() {
    let b = HttpBackend::start("dest").await;
    let mut toml = String::new();
    let redirects = [
        // listener, type, target, include_path, include_query
        ("r301", "permanent", "url", true, true),
        ("r302", "found", "url", true, true),
        ("r303", "see_other", "url", true, true),
        ("r307", "temporary", "url", true, true),
        ("no-path", "permanent", "url", false, true),
        ("no-query", "permanent", "url", true, false),
        ("neither", "permanent", "url", false, false),
        ("to-listener", "found", "listener", true, true),
    ];
    // Explicit ports, one per listener, so that this test depends on nothing but redirects
    // (`each_port_zero_listener_gets_its_own_socket` covers port 0).
    let ports = free_ports(redirects.len() + 1);
    toml += &listener("dest", ports[0], &[]);
    for ((name, ..), port) in redirects.iter().zip(&ports[1..]) {
        toml += &listener(name, *port, &[]);
    }
    toml += &pool("pool", &[b.addr]);
    toml += &settings("settings", "");
    toml += &basic_rule("dest", "dest", "pool", "settings", "");
    for (name, kind, target, path, query) in redirects {
        let target = if target == "url" {
            "target_url = \"https://example.com\"".to_string()
        } else {
            "target_listener = \"dest\"".to_string()
        };
        toml += &format!(
            "[[redirects]]\nname = {name:?}\nredirect_type = {kind:?}\n{target}\ninclude_path = {path}\ninclude_query_string = {query}\n\n"
        );
        toml +=
            &format!("[[rules]]\nname = {name:?}\nlistener = {name:?}\nredirect = {name:?}\n\n");
    }
    let gw = start_gateway(&toml).await;
    let dest_port = listener_addr(&gw, "dest").port();

    let with_all = "https://example.com/a/b?c=d".to_string();
    let expectations: Vec<(&str, u16, Vec<String>, &str)> = vec![
        ("r301", 301, vec![with_all.clone()], "permanent redirect"),
        ("r302", 302, vec![with_all.clone()], "found redirect"),
        ("r303", 303, vec![with_all.clone()], "see-other redirect"),
        ("r307", 307, vec![with_all.clone()], "temporary redirect"),
        (
            "no-path",
            301,
            vec![
                "https://example.com/?c=d".into(),
                "https://example.com?c=d".into(),
            ],
            "include_path = false keeps only the query",
        ),
        (
            "no-query",
            301,
            vec!["https://example.com/a/b".into()],
            "include_query_string = false drops the query",
        ),
        (
            "neither",
            301,
            vec!["https://example.com".into(), "https://example.com/".into()],
            "neither path nor query",
        ),
        (
            "to-listener",
            302,
            vec![format!("http://site.test:{dest_port}/a/b?c=d")],
            "a redirect to a listener keeps the host, takes the listener's scheme and port",
        ),
    ];
    for (name, status, locations, semantic) in expectations {
        let addr = listener_addr(&gw, name);
        let reply = get(addr, "site.test", "/a/b?c=d").await;
        assert_eq!(
            reply.status.as_u16(),
            status,
            "{semantic}: status (listener {name})"
        );
        let location = reply.header("location").unwrap_or_default().to_string();
        assert!(
            locations.contains(&location),
            "{semantic}: Location {location:?}, expected one of {locations:?} (listener {name})"
        );
    }
    assert_eq!(
        b.hits_under("/a/"),
        0,
        "a redirect answers at the gateway; the backend must not see the request"
    );

    let followed = get(listener_addr(&gw, "dest"), "site.test", "/a/b?c=d").await;
    assert_eq!(
        followed.backend(),
        Some("dest"),
        "the redirect's target listener serves"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn path_rule_and_default_redirects() {
    let b = HttpBackend::start("app").await;
    let mut toml = listener("web", 0, &[]);
    toml += &pool("pool", &[b.addr]);
    toml += &settings("settings", "");
    toml += "[[rules]]\nname = \"paths\"\nlistener = \"web\"\nurl_path_map = \"map\"\n\n";
    toml += "[[redirects]]\nname = \"old\"\nredirect_type = \"permanent\"\ntarget_url = \"https://new.example\"\n\n";
    toml += "[[redirects]]\nname = \"fallback\"\nredirect_type = \"temporary\"\ntarget_url = \"https://fallback.example\"\ninclude_path = false\ninclude_query_string = false\n\n";
    toml += "[[url_path_maps]]\nname = \"map\"\ndefault_redirect = \"fallback\"\n\n";
    toml += "[[url_path_maps.path_rules]]\nname = \"old\"\npaths = [\"/old/*\"]\nredirect = \"old\"\n\n";
    toml += "[[url_path_maps.path_rules]]\nname = \"app\"\npaths = [\"/app/*\"]\nbackend_pool = \"pool\"\nbackend_settings = \"settings\"\n\n";
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");

    let old = get(addr, "site.test", "/old/page?x=1").await;
    assert_eq!(old.status.as_u16(), 301, "a path rule's redirect");
    assert_eq!(
        old.header("location"),
        Some("https://new.example/old/page?x=1"),
        "a path rule's redirect includes path and query by default"
    );
    let other = get(addr, "site.test", "/elsewhere").await;
    assert_eq!(other.status.as_u16(), 307, "the map's default redirect");
    assert!(
        matches!(
            other.header("location"),
            Some("https://fallback.example" | "https://fallback.example/")
        ),
        "the map's default redirect without path: Location {:?}",
        other.header("location")
    );
    assert_routed(
        addr,
        "site.test",
        "/app/x",
        "app",
        "a forwarding path rule beside redirects",
    )
    .await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rewrite_sets_change_request_and_response_headers() {
    let b = HttpBackend::builder("app")
        .header("x-backend-secret", "s3cr3t")
        .header("x-resp-overwrite", "from-backend")
        .start()
        .await;
    let mut toml = listener("web", 0, &[]);
    toml += &pool("pool", &[b.addr]);
    toml += &settings("settings", "");
    toml += &basic_rule("rule", "web", "pool", "settings", "rewrite_set = \"rw\"");
    toml += r#"
[[rewrite_sets]]
name = "rw"
[[rewrite_sets.request_headers]]
name = "x-added"
value = "by-gateway"
[[rewrite_sets.request_headers]]
name = "x-overwrite"
value = "new"
[[rewrite_sets.request_headers]]
name = "x-remove-me"
[[rewrite_sets.response_headers]]
name = "x-resp-added"
value = "yes"
[[rewrite_sets.response_headers]]
name = "x-resp-overwrite"
value = "from-gateway"
[[rewrite_sets.response_headers]]
name = "x-backend-secret"
value = ""
"#;
    let gw = start_gateway(&toml).await;
    let addr = listener_addr(&gw, "web");

    let reply = get_with(
        addr,
        "site.test",
        "/rewrite",
        &[("x-overwrite", "old"), ("x-remove-me", "please")],
    )
    .await;
    assert_eq!(reply.status.as_u16(), 200);
    let seen = b.last();
    assert_eq!(
        seen.header("x-added"),
        Some("by-gateway"),
        "request header rewrite: set adds the header"
    );
    assert_eq!(
        seen.header_all("x-overwrite"),
        vec!["new"],
        "request header rewrite: set replaces the client's value"
    );
    assert_eq!(
        seen.header("x-remove-me"),
        None,
        "request header rewrite: no value deletes the header"
    );
    assert_eq!(
        reply.header("x-resp-added"),
        Some("yes"),
        "response header rewrite: set adds the header"
    );
    assert_eq!(
        reply.header_all("x-resp-overwrite"),
        vec!["from-gateway"],
        "response header rewrite: set replaces the backend's value"
    );
    assert_eq!(
        reply.header("x-backend-secret"),
        None,
        "response header rewrite: an empty value deletes the header"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rules_without_rewrite_sets_leave_headers_alone() {
    let b = HttpBackend::builder("app")
        .header("x-backend-secret", "s3cr3t")
        .start()
        .await;
    let gw = start_gateway(&single_route(&[b.addr], "")).await;
    let addr = listener_addr(&gw, "web");
    let reply = get_with(addr, "site.test", "/", &[("x-remove-me", "please")]).await;
    assert_eq!(
        b.last().header("x-remove-me"),
        Some("please"),
        "ordinary request headers pass"
    );
    assert_eq!(
        reply.header("x-backend-secret"),
        Some("s3cr3t"),
        "ordinary response headers pass"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_port_zero_listener_gets_its_own_socket() {
    let b = backends(&["one", "two", "three"]).await;
    let mut toml = String::new();
    for name in ["one", "two", "three"] {
        toml += &listener(name, 0, &[]);
    }
    toml += &settings("settings", "");
    for (i, name) in ["one", "two", "three"].iter().enumerate() {
        toml += &pool(name, &[b[i].addr]);
        toml += &basic_rule(name, name, name, "settings", "");
    }
    let gw = start_gateway(&toml).await;
    let addrs: Vec<_> = ["one", "two", "three"]
        .iter()
        .map(|n| listener_addr(&gw, n))
        .collect();
    assert!(
        addrs[0] != addrs[1] && addrs[1] != addrs[2] && addrs[0] != addrs[2],
        "port 0 gives every listener a free port of its own, but listener_addr gave {addrs:?}"
    );
    for (i, name) in ["one", "two", "three"].iter().enumerate() {
        assert_routed(
            addrs[i],
            "any.test",
            "/",
            name,
            &format!("listener {name:?} (port 0) serves its own rule"),
        )
        .await;
    }
    gw.shutdown().await;
}
