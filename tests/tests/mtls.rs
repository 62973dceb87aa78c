//! Mutual TLS on HTTPS listeners: SSL profiles with trusted client CA chains, the issuer DN
//! check, revocation lists, strict and passthrough modes, profiles per SNI listener, and the
//! `client_certificate*` server variables reaching the backend through rewrite conditions.
//! Every certificate is made here (rcgen); clients are real rustls clients.

use std::path::Path;
use std::sync::Arc;

use http::{Request, StatusCode};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use wasmgate_tests::config::{basic_rule, pool, settings};
use wasmgate_tests::tls::{Pki, provider, send_over, toml_path};
use wasmgate_tests::*;

/// A client certificate authority: a root, or an intermediate below one.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The intermediates between this CA and its root, nearest first (sent by clients).
    chain: Vec<CertificateDer<'static>>,
    /// The PEM of this CA and every CA above it (what a trusted client CA file holds).
    pem_chain: String,
}

/// A client's certificate, its key and the chain it sends.
struct ClientCert {
    pem: String,
    der: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Contoso");
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl Ca {
    fn root(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(ca_params(name), key).expect("root CA");
        let pem_chain = issuer.pem();
        Ca {
            issuer,
            chain: Vec::new(),
            pem_chain,
        }
    }

    fn intermediate(&self, name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let issuer =
            CertifiedIssuer::signed_by(ca_params(name), key, &self.issuer).expect("intermediate");
        let mut chain = vec![issuer.der().clone()];
        chain.extend(self.chain.iter().cloned());
        // Root first, as a trusted client CA file is written.
        let pem_chain = format!("{}{}", self.pem_chain, issuer.pem());
        Ca {
            issuer,
            chain,
            pem_chain,
        }
    }

    fn client(&self, name: &str, serial: &[u8]) -> ClientCert {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(SerialNumber::from_slice(serial));
        let key = KeyPair::generate().expect("client key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("client certificate");
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.chain.iter().cloned());
        ClientCert {
            pem: cert.pem(),
            der: cert.der().clone(),
            chain,
            key: key.serialize_der(),
        }
    }

    /// A revocation list naming these serial numbers.
    fn crl(&self, revoked: &[&[u8]]) -> String {
        let now = time::OffsetDateTime::now_utc();
        CertificateRevocationListParams {
            this_update: now - time::Duration::hours(1),
            next_update: now + time::Duration::days(1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: now - time::Duration::minutes(5),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .expect("revocation list")
        .pem()
        .expect("PEM")
    }
}

/// A client trusting the gateway's CA, presenting `cert` (or none).
fn client(server_ca: &Pki, cert: Option<&ClientCert>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(server_ca.ca_der()).expect("root");
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match cert {
        Some(c) => builder
            .with_client_auth_cert(
                c.chain.clone(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key.clone())),
            )
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A GET over a new connection with SNI `sni` and Host `host`: the status, or why the
/// handshake or the exchange failed. With TLS 1.3 the server's refusal of a client certificate
/// arrives after the client's handshake completed, so it shows on the first exchange.
async fn get(
    gw: &wasmgate::Gateway,
    listener: &str,
    sni: &str,
    host: &str,
    config: Arc<ClientConfig>,
) -> Result<(StatusCode, Option<String>), String> {
    let tcp = within("connect", TcpStream::connect(listener_addr(gw, listener)))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    let stream = within(
        "TLS handshake",
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|e| format!("handshake: {e}"))?;
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let req = if h2 {
        Request::get(format!("https://{host}/"))
    } else {
        Request::get("/").header("host", host)
    };
    let req = req.body(String::new()).expect("request");
    // `send_over` panics on a failed exchange; run it on a task of its own to see it.
    let reply = tokio::spawn(send_over(stream, req))
        .await
        .map_err(|e| format!("exchange: {e}"))?;
    Ok((reply.status, reply.header("x-backend").map(str::to_string)))
}

fn refused(result: &Result<(StatusCode, Option<String>), String>) -> bool {
    result.is_err()
}

/// An HTTPS listener with the gateway's certificate for `hosts`, plus `extra` lines.
fn https_listener(name: &str, port: u16, hosts: &[&str], pki: &Pki, extra: &str) -> String {
    let leaf = pki.issue(&["a.example", "b.example", "c.example", "127.0.0.1"]);
    let (cert, key) = pki.write_leaf(name, &leaf);
    let hosts = hosts
        .iter()
        .map(|h| format!("{h:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[[listeners]]\nname = {name:?}\nprotocol = \"https\"\nport = {port}\nbind_address = \"127.0.0.1\"\nhost_names = [{hosts}]\ncertificate = {}\ncertificate_key = {}\n{extra}\n\n",
        toml_path(&cert),
        toml_path(&key)
    )
}

fn profile(name: &str, files: &[&Path], extra: &str) -> String {
    let files = files
        .iter()
        .map(|f| toml_path(f))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[[ssl_profiles]]\nname = {name:?}\ntrusted_client_certificates = [{files}]\n{extra}\n\n"
    )
}

/// One mTLS listener `site` (basic) behind profile `extra`'s settings, in front of `backend`.
async fn one_site(
    pki: &Pki,
    ca_files: &[&Path],
    profile_extra: &str,
    rest: &str,
) -> (wasmgate::Gateway, HttpBackend) {
    let backend = HttpBackend::start("app").await;
    let mut toml = https_listener("site", 0, &[], pki, "ssl_profile = \"partners\"");
    toml += &profile("partners", ca_files, profile_extra);
    toml += &pool("pool", &[backend.addr]);
    toml += &settings("settings", "");
    toml += rest;
    (start_gateway(&toml).await, backend)
}

fn regex_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A request rewrite setting `header: yes` when `variable` is exactly `value`.
fn exact(header: &str, variable: &str, value: &str) -> String {
    format!(
        "[[rewrite_sets.request_headers]]\nname = {header:?}\nvalue = \"yes\"\n[[rewrite_sets.request_headers.conditions]]\nvariable = {variable:?}\npattern = {:?}\nignore_case = false\n\n",
        format!("^{}$", regex_escape(value))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_valid_client_certificate_is_served_and_its_variables_reach_the_backend() {
    let pki = Pki::new("gateway CA");
    let ca = Ca::root("Contoso Client CA");
    let ca_file = pki.write("clients.pem", &ca.pem_chain);
    let alice = ca.client("alice", &[0x01, 0x2a, 0xbc]);
    let fingerprint = {
        use sha1::Digest;
        sha1::Sha1::digest(alice.der.as_ref())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let mut rewrites = "[[rewrite_sets]]\nname = \"certificate\"\n\n".to_string();
    rewrites += &exact(
        "x-verified",
        "var_client_certificate_verification",
        "SUCCESS",
    );
    rewrites += &exact("x-subject", "var_client_certificate_subject", "CN=alice");
    // RFC 4514 writes the last RDN of the encoded name first; rcgen encodes the common name
    // before the organisation.
    rewrites += &exact(
        "x-issuer",
        "var_client_certificate_issuer",
        "O=Contoso,CN=Contoso Client CA",
    );
    rewrites += &exact("x-serial", "var_client_certificate_serial", "012ABC");
    rewrites += &exact(
        "x-fingerprint",
        "var_client_certificate_fingerprint",
        &fingerprint,
    );
    rewrites += &exact(
        "x-certificate",
        "var_client_certificate",
        &url_encode(&alice.pem),
    );
    let rule = basic_rule(
        "rule",
        "site",
        "pool",
        "settings",
        "rewrite_set = \"certificate\"",
    );
    let (gw, backend) = one_site(&pki, &[&ca_file], "", &format!("{rule}{rewrites}")).await;

    let answer = get(
        &gw,
        "site",
        "a.example",
        "a.example",
        client(&pki, Some(&alice)),
    )
    .await;
    assert_eq!(answer, Ok((StatusCode::OK, Some("app".into()))));
    let seen = backend.last();
    for header in [
        "x-verified",
        "x-subject",
        "x-issuer",
        "x-serial",
        "x-fingerprint",
        "x-certificate",
    ] {
        assert_eq!(seen.header(header), Some("yes"), "{header}: {seen:?}");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_without_a_valid_certificate_are_refused_in_the_handshake() {
    let pki = Pki::new("gateway CA");
    let ca = Ca::root("Contoso Client CA");
    let other = Ca::root("Fabrikam CA");
    let ca_file = pki.write("clients.pem", &ca.pem_chain);
    let rule = basic_rule("rule", "site", "pool", "settings", "");
    let (gw, backend) = one_site(&pki, &[&ca_file], "", &rule).await;

    let none = get(&gw, "site", "a.example", "a.example", client(&pki, None)).await;
    assert!(refused(&none), "no certificate: {none:?}");
    let stranger = other.client("mallory", &[7]);
    let foreign = get(
        &gw,
        "site",
        "a.example",
        "a.example",
        client(&pki, Some(&stranger)),
    )
    .await;
    assert!(refused(&foreign), "another CA's certificate: {foreign:?}");
    assert_eq!(backend.hits(), 0, "a refused client reaches no backend");

    let alice = ca.client("alice", &[1]);
    let answer = get(
        &gw,
        "site",
        "a.example",
        "a.example",
        client(&pki, Some(&alice)),
    )
    .await;
    assert_eq!(answer, Ok((StatusCode::OK, Some("app".into()))));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoked_certificates_are_refused_and_new_lists_apply_when_they_change() {
    let pki = Pki::new("gateway CA");
    let ca = Ca::root("Contoso Client CA");
    let ca_file = pki.write("clients.pem", &ca.pem_chain);
    let crl_file = pki.write("clients.crl", &ca.crl(&[&[0x66]]));
    let rule = basic_rule("rule", "site", "pool", "settings", "");
    let (gw, _backend) = one_site(
        &pki,
        &[&ca_file],
        &format!("revocation_lists = [{}]", toml_path(&crl_file)),
        &rule,
    )
    .await;

    let revoked = ca.client("revoked", &[0x66]);
    let alice = ca.client("alice", &[0x01]);
    let answer = get(
        &gw,
        "site",
        "a.example",
        "a.example",
        client(&pki, Some(&revoked)),
    )
    .await;
    assert!(refused(&answer), "a revoked certificate: {answer:?}");
    let answer = get(
        &gw,
        "site",
        "a.example",
        "a.example",
        client(&pki, Some(&alice)),
    )
    .await;
    assert_eq!(answer, Ok((StatusCode::OK, Some("app".into()))));

    // Alice's certificate is revoked too: once the watcher sees the list change on disk, new
    // handshakes use it.
    pki.write("clients.crl", &ca.crl(&[&[0x66], &[0x01]]));
    eventually("the new revocation list applies", || {
        let config = client(&pki, Some(&alice));
        let gw = &gw;
        async move {
            let answer = get(gw, "site", "a.example", "a.example", config).await;
            refused(&answer).then_some(())
        }
    })
    .await;
    // And a list that no longer names her, reloaded on demand, lets her in again.
    pki.write("clients.crl", &ca.crl(&[&[0x66]]));
    assert!(gw.reload_certificates().is_empty());
    let answer = get(
        &gw,
        "site",
        "a.example",
        "a.example",
        client(&pki, Some(&alice)),
    )
    .await;
    assert_eq!(answer, Ok((StatusCode::OK, Some("app".into()))));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_issuer_dn_check_accepts_only_the_chains_issuing_ca() {
    let pki = Pki::new("gateway CA");
    let root = Ca::root("Contoso Root");
    let issuing = root.intermediate("Contoso Issuing CA");
    // The file holds the root and the issuing CA: the issuing CA's subject is the issuer DN
    // client certificates must name.
    let ca_file = pki.write("chain.pem", &issuing.pem_chain);
    let by_issuing = issuing.client("alice", &[1]);
    let by_root = root.client("bob", &[2]);

    let rule = basic_rule("rule", "site", "pool", "settings", "");
    let (gw, _b) = one_site(
        &pki,
        &[&ca_file],
        "verify_client_cert_issuer_dn = true",
        &rule,
    )
    .await;
    let answer = get(
        &gw,
        "site",
        "a.example",
        "a.example",
        client(&pki, Some(&by_issuing)),
    )
    .await;
    assert_eq!(answer, Ok((StatusCode::OK, Some("app".into()))));
    let answer = get(
        &gw,
        "site",
        "a.example",
        "a.example",
        client(&pki, Some(&by_root)),
    )
    .await;
    assert!(
        refused(&answer),
        "issued by the root, not the issuing CA: {answer:?}"
    );
    gw.shutdown().await;

    // Without the check, any certificate chaining to the root is accepted.
    let (gw, _b) = one_site(&pki, &[&ca_file], "", &rule).await;
    let answer = get(
        &gw,
        "site",
        "a.example",
        "a.example",
        client(&pki, Some(&by_root)),
    )
    .await;
    assert_eq!(answer, Ok((StatusCode::OK, Some("app".into()))));
    gw.shutdown().await;

    // Two chains of different lengths in one file (Application Gateway's scenario 5): the
    // deepest CA, here the second chain's second intermediate, is the issuer DN checked.
    let short = root.intermediate("Contoso Short CA");
    let upper = root.intermediate("Contoso Upper CA");
    let deepest = upper.intermediate("Contoso Deepest CA");
    let both = format!(
        "{}{}{}",
        short.pem_chain,
        upper.pem_chain.trim_start_matches(&root.pem_chain),
        deepest.pem_chain.trim_start_matches(&upper.pem_chain)
    );
    let both_file = pki.write("both.pem", &both);
    let (gw, _b) = one_site(
        &pki,
        &[&both_file],
        "verify_client_cert_issuer_dn = true",
        &rule,
    )
    .await;
    let by_deepest = deepest.client("carol", &[3]);
    let by_short = short.client("dave", &[4]);
    let answer = get(
        &gw,
        "site",
        "a.example",
        "a.example",
        client(&pki, Some(&by_deepest)),
    )
    .await;
    assert_eq!(answer, Ok((StatusCode::OK, Some("app".into()))));
    let answer = get(
        &gw,
        "site",
        "a.example",
        "a.example",
        client(&pki, Some(&by_short)),
    )
    .await;
    assert!(
        refused(&answer),
        "issued by the shorter chain's CA: {answer:?}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passthrough_mode_serves_every_client_and_passes_the_verdict_on() {
    let pki = Pki::new("gateway CA");
    let ca = Ca::root("Contoso Client CA");
    let other = Ca::root("Fabrikam CA");
    let ca_file = pki.write("clients.pem", &ca.pem_chain);
    let mut rewrites = "[[rewrite_sets]]\nname = \"certificate\"\n\n".to_string();
    for (header, value) in [
        ("x-success", "SUCCESS"),
        ("x-none", "NONE"),
        (
            "x-unknown-issuer",
            "FAILED:unable to get local issuer certificate",
        ),
    ] {
        rewrites += &exact(header, "var_client_certificate_verification", value);
    }
    let rule = basic_rule(
        "rule",
        "site",
        "pool",
        "settings",
        "rewrite_set = \"certificate\"",
    );
    let (gw, backend) = one_site(
        &pki,
        &[&ca_file],
        "verify_client_auth_mode = \"passthrough\"",
        &format!("{rule}{rewrites}"),
    )
    .await;

    let cases = [
        (
            "a valid certificate",
            Some(ca.client("alice", &[1])),
            "x-success",
        ),
        ("no certificate", None, "x-none"),
        (
            "another CA's certificate",
            Some(other.client("mallory", &[2])),
            "x-unknown-issuer",
        ),
    ];
    for (what, cert, header) in cases {
        let answer = get(
            &gw,
            "site",
            "a.example",
            "a.example",
            client(&pki, cert.as_ref()),
        )
        .await;
        assert_eq!(answer, Ok((StatusCode::OK, Some("app".into()))), "{what}");
        let seen = backend.last();
        assert_eq!(seen.header(header), Some("yes"), "{what}: {seen:?}");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sni_listeners_on_one_port_have_profiles_of_their_own() {
    let pki = Pki::new("gateway CA");
    let ca_a = Ca::root("Contoso A CA");
    let ca_b = Ca::root("Contoso B CA");
    let file_a = pki.write("a.pem", &ca_a.pem_chain);
    let file_b = pki.write("b.pem", &ca_b.pem_chain);
    let backend_a = HttpBackend::start("a").await;
    let backend_b = HttpBackend::start("b").await;
    let backend_c = HttpBackend::start("c").await;
    let port = free_port();
    let mut toml = https_listener("site-a", port, &["a.example"], &pki, "ssl_profile = \"a\"");
    toml += &https_listener("site-b", port, &["b.example"], &pki, "ssl_profile = \"b\"");
    toml += &https_listener("site-c", port, &["c.example"], &pki, "");
    toml += &profile("a", &[&file_a], "");
    toml += &profile("b", &[&file_b], "");
    for (site, backend) in [("a", &backend_a), ("b", &backend_b), ("c", &backend_c)] {
        toml += &pool(&format!("pool-{site}"), &[backend.addr]);
        toml += &basic_rule(
            &format!("rule-{site}"),
            &format!("site-{site}"),
            &format!("pool-{site}"),
            "settings",
            "",
        );
    }
    toml += &settings("settings", "");
    let gw = start_gateway(&toml).await;

    let alice = ca_a.client("alice", &[1]);
    let bob = ca_b.client("bob", &[2]);
    let ok = |b: &str| Ok((StatusCode::OK, Some(b.to_string())));
    assert_eq!(
        get(
            &gw,
            "site-a",
            "a.example",
            "a.example",
            client(&pki, Some(&alice))
        )
        .await,
        ok("a")
    );
    assert_eq!(
        get(
            &gw,
            "site-a",
            "b.example",
            "b.example",
            client(&pki, Some(&bob))
        )
        .await,
        ok("b")
    );
    let crossed = get(
        &gw,
        "site-a",
        "b.example",
        "b.example",
        client(&pki, Some(&alice)),
    )
    .await;
    assert!(
        refused(&crossed),
        "profile a's client on site b: {crossed:?}"
    );
    assert_eq!(
        get(&gw, "site-a", "c.example", "c.example", client(&pki, None)).await,
        ok("c"),
        "the listener without a profile asks for no certificate"
    );
    // A handshake made for site c (no client certificate) cannot be used for site a.
    assert_eq!(
        get(&gw, "site-a", "c.example", "a.example", client(&pki, None)).await,
        Ok((StatusCode::MISDIRECTED_REQUEST, None))
    );
    assert_eq!(backend_a.hits(), 1);
    gw.shutdown().await;
}

#[test]
fn invalid_ssl_profiles_are_refused_naming_the_field() {
    let pki = Pki::new("gateway CA");
    let ca = Ca::root("Contoso Client CA");
    let good = pki.write("clients.pem", &ca.pem_chain);
    let empty = pki.write("empty.pem", "no certificate here\n");
    let huge = pki.write("huge.pem", &ca.pem_chain.repeat(60));
    let garbage_crl = pki.write("garbage.crl", "not a revocation list");
    let missing = pki.path("missing.pem");
    let shown = |p: &Path| format!("{:?}", p.display().to_string());
    let listener = https_listener("site", 443, &[], &pki, "ssl_profile = \"p\"");
    let with = |profile_extra: &str, files: &[&Path]| {
        format!("{listener}{}", profile("p", files, profile_extra))
    };
    let cases: Vec<(&str, String, String)> = vec![
        (
            "unknown profile",
            https_listener("site", 443, &[], &pki, "ssl_profile = \"nope\""),
            "listeners[0].ssl_profile: no ssl_profile named \"nope\"".into(),
        ),
        (
            "profile on an http listener",
            "[[listeners]]\nname = \"site\"\nport = 80\nssl_profile = \"p\"\n".into(),
            "listeners[0].ssl_profile: only an https listener takes TLS settings".into(),
        ),
        (
            "no trusted certificates",
            with("", &[]),
            "ssl_profiles[0].trusted_client_certificates: list at least one PEM file of trusted client CA certificates".into(),
        ),
        (
            "six chains",
            with("", &[&good, &good, &good, &good, &good, &good]),
            "ssl_profiles[0].trusted_client_certificates: at most 5 trusted client CA chains per SSL profile, found 6".into(),
        ),
        (
            "missing file",
            with("", &[&missing]),
            format!(
                "ssl_profiles[0].trusted_client_certificates: SSL profile \"p\": cannot read {}: No such file or directory (os error 2)",
                shown(&missing)
            ),
        ),
        (
            "file without a certificate",
            with("", &[&empty]),
            format!(
                "ssl_profiles[0].trusted_client_certificates: SSL profile \"p\": {} holds no certificate",
                shown(&empty)
            ),
        ),
        (
            "file over 25 KB",
            with("", &[&huge]),
            format!(
                "ssl_profiles[0].trusted_client_certificates: SSL profile \"p\": {} is larger than 25600 bytes",
                shown(&huge)
            ),
        ),
        (
            "unknown mode",
            with("verify_client_auth_mode = \"lenient\"", &[&good]),
            "ssl_profiles[0].verify_client_auth_mode: \"lenient\" is not a mode; use \"strict\" or \"passthrough\"".into(),
        ),
        (
            "missing revocation list",
            with(&format!("revocation_lists = [{}]", toml_path(&missing)), &[&good]),
            format!(
                "ssl_profiles[0].revocation_lists: SSL profile \"p\": cannot read {}: No such file or directory (os error 2)",
                shown(&missing)
            ),
        ),
        (
            "revocation list that is not one",
            with(&format!("revocation_lists = [{}]", toml_path(&garbage_crl)), &[&good]),
            format!(
                "ssl_profiles[0].revocation_lists: SSL profile \"p\": {} is not a certificate revocation list rustls can read",
                shown(&garbage_crl)
            ),
        ),
        (
            "two profiles of one name",
            format!("{}{}", with("", &[&good]), profile("p", &[&good], "")),
            "ssl_profiles[1].name: \"p\" is already the name of ssl_profiles[0]".into(),
        ),
    ];
    for (what, toml, expected) in cases {
        let err = wasmgate::config::Config::from_toml(&toml)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted\n{toml}"));
        assert_eq!(err.to_string(), expected, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_configuration_reload_adds_and_removes_client_authentication() {
    let pki = Pki::new("gateway CA");
    let ca = Ca::root("Contoso Client CA");
    let ca_file = pki.write("clients.pem", &ca.pem_chain);
    let backend = HttpBackend::start("app").await;
    let port = free_port();
    let toml = |extra: &str| {
        let mut toml = https_listener("site", port, &[], &pki, extra);
        toml += &profile("partners", &[&ca_file], "");
        toml += &pool("pool", &[backend.addr]);
        toml += &settings("settings", "");
        toml += &basic_rule("rule", "site", "pool", "settings", "");
        toml
    };
    let config =
        |extra: &str| wasmgate::config::Config::from_toml(&toml(extra)).expect("configuration");
    let gw = start_gateway(&toml("")).await;
    let ok = Ok((StatusCode::OK, Some("app".to_string())));
    assert_eq!(
        get(&gw, "site", "a.example", "a.example", client(&pki, None)).await,
        ok
    );

    gw.reload(config("ssl_profile = \"partners\""))
        .await
        .expect("reload with the profile");
    let answer = get(&gw, "site", "a.example", "a.example", client(&pki, None)).await;
    assert!(
        refused(&answer),
        "no certificate after the reload: {answer:?}"
    );
    let alice = ca.client("alice", &[1]);
    assert_eq!(
        get(
            &gw,
            "site",
            "a.example",
            "a.example",
            client(&pki, Some(&alice))
        )
        .await,
        ok
    );

    gw.reload(config("")).await.expect("reload without it");
    assert_eq!(
        get(&gw, "site", "a.example", "a.example", client(&pki, None)).await,
        ok
    );
    gw.shutdown().await;
}
