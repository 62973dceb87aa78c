//! Plugins from an OCI registry, against a real one (Debian's `docker-registry` on 127.0.0.1):
//! `wasmgate plugin push`, then loads by tag and by digest through the configuration and the
//! admin API, with the digest pinned in the plugin list; reloads that re-resolve a tag and keep
//! a pinned digest without the registry; and every refusal (manifest not found, registry
//! unreachable, not a component, content that does not match its digest) as a one-line error
//! that leaves the running version serving.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use wasmgate::admin::PLUGINS_PATH;
use wasmgate::admin::plugins::percent_encode;
use wasmgate::config::{Config, OciReference};
use wasmgate::plugin::oci;
use wasmgate_cli::admin::client::{AdminApi, ClientError, call};
use wasmgate_cli::admin::plugin_client::PluginCommand;
use wasmgate_cli::registry::RegistryCommand;
use wasmgate_tests::config::{basic_rule, listener, pool, settings};
use wasmgate_tests::registry::Registry;
use wasmgate_tests::*;

const TOKEN: &str = "plugin-registry-token-0123456789";

fn all_to(pool: &str) -> String {
    format!(
        r#"{{"variants": [{{"name": "v-{pool}", "pool": "{pool}", "settings": "web", "weight": 1}}]}}"#
    )
}

/// Listener `web` routed by router `canary` loaded from `reference` (everything to pool `a`),
/// pools `native`, `a` and `b`, and an admin listener.
fn gateway_toml(native: &HttpBackend, a: &HttpBackend, b: &HttpBackend, reference: &str) -> String {
    let mut toml = plugin_engine_section();
    toml += &listener("web", 0, &[]);
    toml += &pool("native", &[native.addr]);
    toml += &pool("a", &[a.addr]);
    toml += &pool("b", &[b.addr]);
    toml += &settings("web", "");
    toml += &basic_rule("rule", "web", "native", "web", "router = \"canary\"");
    toml += &format!("[admin]\nbind_address = \"127.0.0.1\"\nport = 0\ntoken = {TOKEN:?}\n\n");
    toml += &format!(
        "[[plugins]]\nname = \"canary\"\npath = {reference:?}\nkind = \"router\"\nconfig = '{}'\n\n",
        all_to("a")
    );
    toml
}

async fn start(toml: &str) -> wasmgate::Gateway {
    let config = Config::from_toml(toml)
        .unwrap_or_else(|e| panic!("test configuration refused: {e}\n--- config ---\n{toml}"));
    let gw = within_for(
        Duration::from_secs(120),
        "Gateway::start",
        wasmgate::Gateway::start(config),
    )
    .await
    .unwrap_or_else(|e| panic!("gateway failed to start: {e}\n--- config ---\n{toml}"));
    assert!(gw.wait_for_first_probes(WAIT).await, "first probes");
    gw
}

fn admin(gw: &wasmgate::Gateway) -> AdminApi {
    let url = format!("http://{}", gw.admin_addr().expect("admin listener"));
    AdminApi::new(&url, Some(TOKEN), None).expect("admin URL")
}

/// An admin call: `Ok(JSON)` for a 2xx, `Err((status, message))` otherwise.
async fn api(
    gw: &wasmgate::Gateway,
    method: Method,
    path: &str,
) -> Result<serde_json::Value, (u16, String)> {
    match within_for(
        Duration::from_secs(60),
        path,
        call(&admin(gw), method, path, Bytes::new()),
    )
    .await
    {
        Ok((_, body)) => Ok(serde_json::from_slice(&body).expect("JSON")),
        Err(ClientError::Status { status, body, .. }) => Err((status.as_u16(), body)),
        Err(e) => panic!("{path}: {e}"),
    }
}

/// `POST /api/plugins/{name}/{action}?path={reference}` plus `extra` parameters.
async fn by_reference(
    gw: &wasmgate::Gateway,
    name: &str,
    action: &str,
    reference: &str,
    extra: &str,
) -> Result<serde_json::Value, (u16, String)> {
    let path = format!(
        "/api/plugins/{name}/{action}?path={}{extra}",
        percent_encode(reference)
    );
    api(gw, Method::POST, &path).await
}

/// The plugin list's entry for `name`.
async fn listed(gw: &wasmgate::Gateway, name: &str) -> serde_json::Value {
    let list = api(gw, Method::GET, PLUGINS_PATH)
        .await
        .expect("plugin list");
    list.as_array()
        .expect("a list")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("plugin {name} not listed: {list}"))
        .clone()
}

/// `wasmgate plugin push FILE REFERENCE`: the digest it prints.
async fn push(file: &std::path::Path, reference: &str) -> String {
    let out = within_for(
        Duration::from_secs(60),
        "plugin push",
        RegistryCommand::Push {
            file: file.to_owned(),
            reference: reference.to_owned(),
        }
        .run(),
    )
    .await
    .unwrap_or_else(|e| panic!("push {reference}: {e}"));
    let digest = out.trim().to_owned();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "push prints the digest: {out:?}"
    );
    digest
}

async fn reaches(gw: &wasmgate::Gateway, pool: &str, why: &str) {
    assert_routed(listener_addr(gw, "web"), "app", "/check", pool, why).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_plugins_load_by_tag_and_digest_through_configuration_and_admin_api() {
    let mut registry = Registry::start().await;
    let canary = plugin_path("example-canary-router");
    let tag = registry.reference("team/canary:v1");
    let digest = push(&canary, &tag).await;
    // The artifact is the Wasm OCI layout: the registry serves it back as pushed.
    let (resolved, wasm) = oci::pull(&OciReference::parse(&tag).unwrap(), None)
        .await
        .expect("pull");
    assert_eq!(resolved.digest, digest);
    assert_eq!(&wasm[..], &std::fs::read(&canary).unwrap()[..]);

    // By tag in the configuration: pinned to the digest it resolved to.
    let native = HttpBackend::start("native").await;
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let toml = gateway_toml(&native, &a, &b, &tag);
    let gw = start(&toml).await;
    reaches(&gw, "a", "the router loaded from the registry routes").await;
    let view = listed(&gw, "canary").await;
    assert_eq!(view["digest"], digest.as_str(), "{view}");
    assert_eq!(view["origin"], format!("{tag}@{digest}"), "{view}");
    assert_eq!(
        view["contentHash"],
        oci::digest_of(&wasm).trim_start_matches("sha256:"),
        "the compiled-component cache key is the layer's digest"
    );

    // The CLI's list shows the digest.
    let table = PluginCommand::List.run(&admin(&gw)).await.expect("list");
    assert!(
        table.contains("DIGEST") && table.contains(&digest[..19]),
        "{table}"
    );

    // A reload with the tag unchanged keeps the running version (same digest, same load).
    let loaded_at = view["loadedAt"].clone();
    gw.reload(Config::from_toml(&toml).unwrap())
        .await
        .expect("reload with the same tag");
    assert_eq!(
        listed(&gw, "canary").await["loadedAt"],
        loaded_at,
        "no new version"
    );

    // The tag moves (pushed again: a new manifest); a reload resolves it again and pins the
    // new digest.
    let moved = push(&canary, &tag).await;
    assert_ne!(
        moved, digest,
        "a new push makes a new manifest (its config's creation time)"
    );
    gw.reload(Config::from_toml(&toml).unwrap())
        .await
        .expect("reload after the tag moved");
    assert_eq!(listed(&gw, "canary").await["digest"], moved.as_str());

    // By digest through the admin API: replace (to pool b) and load a new plugin.
    let pinned = registry.reference(&format!("team/canary@{digest}"));
    let view = by_reference(
        &gw,
        "canary",
        "replace",
        &pinned,
        &format!("&config={}", percent_encode(&all_to("b"))),
    )
    .await
    .expect("replace by digest");
    assert_eq!(view["digest"], digest.as_str(), "{view}");
    assert_eq!(view["origin"], pinned.as_str(), "{view}");
    reaches(&gw, "b", "the replacement from the registry routes").await;
    let second = format!("&kind=router&config={}", percent_encode(&all_to("a")));
    let view = by_reference(&gw, "second", "load", &tag, &second)
        .await
        .expect("load by tag");
    assert_eq!(view["digest"], moved.as_str(), "{view}");

    // By digest in the configuration: a reload needs no registry once that digest runs.
    let pinned_toml = gateway_toml(&native, &a, &b, &pinned);
    gw.reload(Config::from_toml(&pinned_toml).unwrap())
        .await
        .expect("reload pinned by digest");
    assert_eq!(listed(&gw, "canary").await["digest"], digest.as_str());
    registry.stop();
    gw.reload(Config::from_toml(&pinned_toml).unwrap())
        .await
        .expect("a reload pinned to the running digest works without the registry");
    // A tag needs the registry: with it gone the reload is refused and nothing changes.
    let err = gw
        .reload(Config::from_toml(&toml).unwrap())
        .await
        .expect_err("a tag cannot be resolved without the registry")
        .to_string();
    assert!(
        err.contains(&format!(
            "plugin \"canary\": {tag}: cannot reach registry {}",
            registry.addr
        )),
        "{err}"
    );
    assert!(!err.contains('\n'), "one line: {err}");
    assert_eq!(listed(&gw, "canary").await["digest"], digest.as_str());
    reaches(&gw, "a", "the pinned version still serves").await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_refusals_are_one_line_and_change_nothing() {
    let registry = Registry::start().await;
    let canary = plugin_path("example-canary-router");
    let tag = registry.reference("team/canary:v1");
    let digest = push(&canary, &tag).await;
    let native = HttpBackend::start("native").await;
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let gw = start(&gateway_toml(&native, &a, &b, &tag)).await;
    reaches(&gw, "a", "loaded by tag").await;

    let refused = |reference: String, status: u16, expected: String| {
        let gw = &gw;
        async move {
            let (got, body) = by_reference(gw, "canary", "replace", &reference, "")
                .await
                .expect_err("refused");
            assert_eq!(
                (got, body.as_str()),
                (status, expected.as_str()),
                "{reference}"
            );
        }
    };

    // Manifest not found.
    let missing = registry.reference("team/none:v1");
    refused(
        missing.clone(),
        422,
        format!("{missing}: manifest not found"),
    )
    .await;

    // Unreachable registry.
    let dead = format!("oci://127.0.0.1:{}/team/canary:v1", free_port());
    let (status, body) = by_reference(&gw, "canary", "replace", &dead, "")
        .await
        .expect_err("unreachable");
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains(&format!("{dead}: cannot reach registry 127.0.0.1:")),
        "{body}"
    );

    // A core module in the Wasm layout; a container image's config media type.
    let core = registry.reference("team/core:v1");
    let module = b"\0asm\x01\0\0\0".to_vec();
    oci::push_artifact(
        &OciReference::parse(&core).unwrap(),
        (oci::CONFIG_MEDIA_TYPE, b"{}"),
        (oci::LAYER_MEDIA_TYPE, &module),
        None,
    )
    .await
    .expect("push a core module as is");
    refused(
        core.clone(),
        422,
        format!("{core}: not a Wasm component artifact: a core Wasm module, not a component (a plugin is a component: build for wasm32-wasip2, or wrap the module with `wasm-tools component new`)"),
    )
    .await;
    let image = registry.reference("team/image:v1");
    oci::push_artifact(
        &OciReference::parse(&image).unwrap(),
        ("application/vnd.oci.image.config.v1+json", b"{}"),
        (
            "application/vnd.oci.image.layer.v1.tar+gzip",
            b"not a tarball",
        ),
        None,
    )
    .await
    .expect("push an image-like artifact");
    refused(
        image.clone(),
        422,
        format!("{image}: not a Wasm component artifact: config media type application/vnd.oci.image.config.v1+json; expected application/vnd.wasm.config.v0+json"),
    )
    .await;
    // `plugin push` refuses a core module before anything is sent.
    let module_file =
        std::env::temp_dir().join(format!("wasmgate-core-{}.wasm", std::process::id()));
    std::fs::write(&module_file, &module).unwrap();
    let err = RegistryCommand::Push {
        file: module_file.clone(),
        reference: registry.reference("team/refused:v1"),
    }
    .run()
    .await
    .expect_err("a core module is not pushed")
    .to_string();
    let _ = std::fs::remove_file(&module_file);
    assert!(err.contains("a core Wasm module, not a component"), "{err}");

    // Content that does not hash to its digest: the registry's stored layer altered.
    let trap = plugin_path("fixture-trap");
    let tampered = registry.reference("team/tampered:v1");
    push(&trap, &tampered).await;
    let layer = oci::digest_of(&std::fs::read(&trap).unwrap());
    let file = registry.blob_file(&layer);
    let mut bytes = std::fs::read(&file).expect("the stored layer");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let (status, body) = by_reference(&gw, "canary", "replace", &tampered, "")
        .await
        .expect_err("digest mismatch");
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains(&format!(
            "{tampered}: the component does not hash to its digest: expected {layer}, got sha256:"
        )),
        "{body}"
    );
    // A digest the manifest does not hash to.
    let wrong = registry.reference(&format!("team/canary@sha256:{}", "0".repeat(64)));
    refused(wrong.clone(), 422, format!("{wrong}: manifest not found")).await;

    // The configuration's path: refused with the plugin named, nothing changed.
    let err = gw
        .reload(Config::from_toml(&gateway_toml(&native, &a, &b, &missing)).unwrap())
        .await
        .expect_err("a reload naming a missing manifest")
        .to_string();
    assert!(
        err.contains(&format!("plugin \"canary\": {missing}: manifest not found")),
        "{err}"
    );
    let err = Config::from_toml(&gateway_toml(
        &native,
        &a,
        &b,
        "oci://127.0.0.1/team/canary",
    ))
    .expect_err("no tag")
    .to_string();
    assert!(
        err.contains("plugins[0].path") && err.contains("give a tag"),
        "{err}"
    );

    // After every refusal the first version serves, pinned as before.
    assert_eq!(listed(&gw, "canary").await["digest"], digest.as_str());
    reaches(&gw, "a", "the running version kept serving").await;
    gw.shutdown().await;
}

/// A registry that wants credentials (HTTP Basic, as `htpasswd` auth does): refused without
/// them or with a wrong password, in one line; push and pull with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_credentials_are_sent_when_the_registry_asks() {
    use wasmgate_tests::registry::{BASIC_PASSWORD, BASIC_USER};
    let registry = Registry::start_with_basic_auth().await;
    let reference = OciReference::parse(&registry.reference("team/canary:v1")).unwrap();
    let wasm = std::fs::read(plugin_path("example-canary-router")).unwrap();
    let credentials = |password: &str| {
        Some(oci::Credentials {
            username: BASIC_USER.into(),
            password: password.into(),
        })
    };
    let err = oci::push(&reference, &wasm, None)
        .await
        .expect_err("no credentials")
        .to_string();
    assert_eq!(
        err,
        format!(
            "registry {} refused access: it asks for a user name and password: set WASMGATE_REGISTRY_USERNAME and WASMGATE_REGISTRY_PASSWORD",
            registry.addr
        )
    );
    let err = oci::push(&reference, &wasm, credentials("wrong"))
        .await
        .expect_err("a wrong password")
        .to_string();
    assert_eq!(
        err,
        format!(
            "registry {} refused access: it refused the credentials of user \"tester\"",
            registry.addr
        )
    );
    let digest = oci::push(&reference, &wasm, credentials(BASIC_PASSWORD))
        .await
        .expect("push with credentials");
    let (resolved, pulled) = oci::pull(&reference, credentials(BASIC_PASSWORD))
        .await
        .expect("pull with credentials");
    assert_eq!((resolved.digest, &pulled[..]), (digest, &wasm[..]));
}
