//! Plugin components in OCI registries: fetched by reference (`oci://HOST/REPOSITORY:TAG` or
//! `@sha256:DIGEST`, see [`OciReference`]) and published by `wasmgate plugin push`.
//!
//! # Layout
//!
//! The Wasm OCI artifact of the CNCF TAG Runtime's Wasm working group, as `wkg` (wasm-pkg) and
//! the `oci-wasm` crate write it: an OCI image manifest
//! (`application/vnd.oci.image.manifest.v1+json`) whose config has the media type
//! `application/vnd.wasm.config.v0+json` (`{"created", "architecture": "wasm", "os": "wasip2",
//! "layerDigests", "component": {"imports", "exports"}}`) and whose one layer is the component
//! itself, `application/wasm`. Anything else (a container image, a core module, several Wasm
//! layers) is refused as "not a Wasm component artifact".
//!
//! # Digests
//!
//! A reference resolves to its manifest's digest (SHA-256 of the manifest's bytes), which is
//! pinned in the plugin's running version and shown in the plugin list. A reference that gives
//! a digest must get a manifest that hashes to it; the layer must hash to the digest the
//! manifest gives it. The layer's digest is the component's SHA-256, the key of the compiled
//! component cache (`cache.rs`), so a component pulled again is not compiled again.
//!
//! # Why not `oci-client`
//!
//! `oci-client` (with `oci-wasm` over it) is the well-kept Rust client, but it brings reqwest
//! with a TLS stack and root store of its own, beside the gateway's hyper and rustls (ring,
//! the system's roots), plus JWT and chrono for what is here six requests of the
//! distribution API (`transport.rs`): manifest and blob GET, blob HEAD, upload POST and PUT,
//! manifest PUT.

mod transport;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode, header};
use serde::{Deserialize, Serialize};

use transport::Session;
pub use transport::{Credentials, PASSWORD_ENV, USERNAME_ENV};

pub use crate::config::OciReference;

/// The manifest media type of a Wasm artifact.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The config media type of a Wasm artifact.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The media type of the layer holding the component.
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Registries are required to take manifests of 4 MiB (OCI distribution spec, "Pushing
/// manifests"); a Wasm artifact's is a few hundred bytes.
const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// The largest component fetched (as the admin API's uploads).
const MAX_LAYER_BYTES: usize = super::registry::MAX_COMPONENT_BYTES;

/// Why a component could not be fetched or published. One line each; the caller adds the
/// reference.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("cannot reach registry {registry}: {reason}")]
    Unreachable { registry: String, reason: String },
    #[error("registry {registry} refused access: {reason}")]
    Denied { registry: String, reason: String },
    #[error("manifest not found")]
    NotFound,
    #[error("{what} does not hash to its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("not a Wasm component artifact: {0}")]
    NotComponent(String),
    #[error("over the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error("the registry answered {status} to {action}{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status {
        action: &'static str,
        status: StatusCode,
        message: Option<String>,
    },
    #[error("{0}")]
    Protocol(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// A fetch or push that failed, with the reference it was for ("oci://…: manifest not found").
#[derive(Debug, thiserror::Error)]
#[error("{reference}: {error}")]
pub struct RegistryFailure {
    pub reference: OciReference,
    pub error: OciError,
}

impl RegistryFailure {
    pub fn new(reference: &OciReference, error: OciError) -> Box<RegistryFailure> {
        Box::new(RegistryFailure {
            reference: reference.clone(),
            error,
        })
    }
}

/// A reference resolved to its manifest: what is pinned, and where the component is.
pub struct Resolved {
    /// The reference pinned to [`digest`](Self::digest).
    pub reference: OciReference,
    /// The manifest's digest (`sha256:…`).
    pub digest: String,
    layer: Descriptor,
    session: Arc<Session>,
}

impl Resolved {
    /// The component's SHA-256 in hex, as the manifest gives it (its layer's digest).
    pub fn content_hash(&self) -> &str {
        self.layer.digest.trim_start_matches("sha256:")
    }

    /// Downloads the component, checks it against its digest and that it is a component.
    pub async fn fetch(&self) -> Result<Arc<[u8]>, OciError> {
        let answer = self
            .session
            .send(
                Method::GET,
                &self.session.url(&format!("blobs/{}", self.layer.digest)),
                &[],
                Bytes::new(),
                MAX_LAYER_BYTES,
            )
            .await?;
        check_status(&answer, "the component's download")?;
        let actual = digest_of(&answer.body);
        if actual != self.layer.digest {
            return Err(OciError::DigestMismatch {
                what: "the component",
                expected: self.layer.digest.clone(),
                actual,
            });
        }
        check_component(&answer.body).map_err(OciError::NotComponent)?;
        Ok(Arc::from(&answer.body[..]))
    }
}

/// Asks the registry for `reference`'s manifest and checks that it is a Wasm component artifact.
/// The gateway and the CLI pass [`Credentials::from_env`].
pub async fn resolve(
    reference: &OciReference,
    credentials: Option<Credentials>,
) -> Result<Resolved, OciError> {
    let session = Session::new(reference, credentials);
    let accept = [
        MANIFEST_MEDIA_TYPE,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
    .join(", ");
    let answer = session
        .send(
            Method::GET,
            &session.url(&format!("manifests/{}", reference.manifest_reference())),
            &[(header::ACCEPT, &accept)],
            Bytes::new(),
            MAX_MANIFEST_BYTES,
        )
        .await?;
    if answer.status == StatusCode::NOT_FOUND {
        return Err(OciError::NotFound);
    }
    check_status(&answer, "the manifest's download")?;
    let digest = digest_of(&answer.body);
    // Pinned by the reference, or announced by the registry: the bytes must match it.
    let announced = answer
        .headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok());
    if let Some(expected) = reference.digest.as_deref().or(announced)
        && expected != digest
    {
        return Err(OciError::DigestMismatch {
            what: "the manifest",
            expected: expected.to_owned(),
            actual: digest,
        });
    }
    let manifest: Manifest = serde_json::from_slice(&answer.body).map_err(|e| {
        OciError::NotComponent(format!("the manifest is not an image manifest: {e}"))
    })?;
    if let Some(t) = manifest.media_type.as_deref()
        && t != MANIFEST_MEDIA_TYPE
    {
        return Err(OciError::NotComponent(format!(
            "manifest media type {t}; expected {MANIFEST_MEDIA_TYPE}"
        )));
    }
    if manifest.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(OciError::NotComponent(format!(
            "config media type {}; expected {CONFIG_MEDIA_TYPE}",
            manifest.config.media_type
        )));
    }
    let mut wasm = manifest
        .layers
        .iter()
        .filter(|l| l.media_type == LAYER_MEDIA_TYPE);
    let layer = match (wasm.next(), wasm.next()) {
        (Some(l), None) => l.clone(),
        (None, _) => {
            let types: Vec<&str> = manifest
                .layers
                .iter()
                .map(|l| l.media_type.as_str())
                .collect();
            return Err(OciError::NotComponent(format!(
                "no {LAYER_MEDIA_TYPE} layer (layers: [{}])",
                types.join(", ")
            )));
        }
        (Some(_), Some(_)) => {
            return Err(OciError::NotComponent(format!(
                "several {LAYER_MEDIA_TYPE} layers; a plugin is one component"
            )));
        }
    };
    crate::config::oci::check_digest(&layer.digest)
        .map_err(|why| OciError::Protocol(format!("the manifest's layer: {why}")))?;
    if layer.size > MAX_LAYER_BYTES as u64 {
        return Err(OciError::TooLarge {
            limit: MAX_LAYER_BYTES,
        });
    }
    Ok(Resolved {
        reference: reference.pinned(&digest),
        digest,
        layer,
        session,
    })
}

/// Resolves and downloads `reference`.
pub async fn pull(
    reference: &OciReference,
    credentials: Option<Credentials>,
) -> Result<(Resolved, Arc<[u8]>), OciError> {
    let resolved = resolve(reference, credentials).await?;
    let wasm = resolved.fetch().await?;
    Ok((resolved, wasm))
}

/// Publishes a component as a Wasm artifact under `reference` (its tag, or its digest when it
/// gives only one); returns the manifest's digest. Refuses bytes that are not a component.
pub async fn push(
    reference: &OciReference,
    wasm: &[u8],
    credentials: Option<Credentials>,
) -> Result<String, OciError> {
    check_component(wasm).map_err(OciError::NotComponent)?;
    let (imports, exports) = component_names(wasm).map_err(OciError::NotComponent)?;
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| OciError::Protocol(e.to_string()))?;
    let config = serde_json::json!({
        "created": created,
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [digest_of(wasm)],
        "component": { "imports": imports, "exports": exports },
    });
    let config = serde_json::to_vec(&config).map_err(|e| OciError::Protocol(e.to_string()))?;
    push_artifact(
        reference,
        (CONFIG_MEDIA_TYPE, &config),
        (LAYER_MEDIA_TYPE, wasm),
        credentials,
    )
    .await
}

/// Publishes an artifact of one config and one layer of the given media types, whatever they
/// hold; returns the manifest's digest. [`push`] is the checked way for a component.
pub async fn push_artifact(
    reference: &OciReference,
    (config_media_type, config): (&str, &[u8]),
    (layer_media_type, layer): (&str, &[u8]),
    credentials: Option<Credentials>,
) -> Result<String, OciError> {
    let session = Session::new(reference, credentials);
    let config = upload_blob(&session, config_media_type, config).await?;
    let layer = upload_blob(&session, layer_media_type, layer).await?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_owned()),
        config,
        layers: vec![layer],
    };
    let body =
        Bytes::from(serde_json::to_vec(&manifest).map_err(|e| OciError::Protocol(e.to_string()))?);
    let digest = digest_of(&body);
    // A tag names what is pushed; a reference with only a digest pushes by that digest.
    let name = match (&reference.tag, &reference.digest) {
        (Some(tag), _) => tag.clone(),
        (None, Some(d)) if *d == digest => d.clone(),
        (None, Some(d)) => {
            return Err(OciError::DigestMismatch {
                what: "the manifest",
                expected: d.clone(),
                actual: digest,
            });
        }
        (None, None) => unreachable!("a reference has a tag or a digest"),
    };
    let answer = session
        .send(
            Method::PUT,
            &session.url(&format!("manifests/{name}")),
            &[(header::CONTENT_TYPE, MANIFEST_MEDIA_TYPE)],
            body,
            1 << 20,
        )
        .await?;
    check_status(&answer, "the manifest's upload")?;
    Ok(digest)
}

/// Uploads a blob unless the registry has it (monolithic upload: POST, then PUT with the digest).
async fn upload_blob(
    session: &Session,
    media_type: &str,
    bytes: &[u8],
) -> Result<Descriptor, OciError> {
    let digest = digest_of(bytes);
    let descriptor = Descriptor {
        media_type: media_type.to_owned(),
        digest: digest.clone(),
        size: bytes.len() as u64,
    };
    let head = session
        .send(
            Method::HEAD,
            &session.url(&format!("blobs/{digest}")),
            &[],
            Bytes::new(),
            0,
        )
        .await?;
    if head.status == StatusCode::OK {
        return Ok(descriptor);
    }
    let start = session
        .send(
            Method::POST,
            &session.url("blobs/uploads/"),
            &[],
            Bytes::new(),
            1 << 20,
        )
        .await?;
    check_status(&start, "the upload's start")?;
    let location = start
        .headers
        .get(header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| OciError::Protocol("the upload's start gave no Location".into()))?;
    let mut url = session.resolve(location);
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str("digest=");
    url.push_str(&digest.replace(':', "%3A"));
    let put = session
        .send(
            Method::PUT,
            &url,
            &[(header::CONTENT_TYPE, "application/octet-stream")],
            Bytes::copy_from_slice(bytes),
            1 << 20,
        )
        .await?;
    check_status(&put, "the blob's upload")?;
    Ok(descriptor)
}

fn check_status(answer: &transport::Answer, action: &'static str) -> Result<(), OciError> {
    if answer.status.is_success() {
        return Ok(());
    }
    // The distribution API's error body: {"errors": [{"code", "message"}]}.
    let message = serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| {
            let e = v.get("errors")?.get(0)?;
            Some(format!(
                "{} {}",
                e.get("code")?.as_str()?,
                e.get("message").and_then(|m| m.as_str()).unwrap_or("")
            ))
        })
        .map(|m| m.trim().to_owned());
    Err(OciError::Status {
        action,
        status: answer.status,
        message,
    })
}

/// `sha256:` and the hex SHA-256 of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", super::registry::content_hash(bytes))
}

/// A component starts with `\0asm` and the component layer's version (0x0d, layer 1); a core
/// module with version 1, layer 0.
pub fn check_component(wasm: &[u8]) -> Result<(), String> {
    match wasm.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0, 1, 0]) => Ok(()),
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(
            "a core Wasm module, not a component (a plugin is a component: build for wasm32-wasip2, or wrap the module with `wasm-tools component new`)"
                .into(),
        ),
        _ => Err("not WebAssembly (no \\0asm header)".into()),
    }
}

/// The names a component imports and exports at its top level (for the artifact's config).
fn component_names(wasm: &[u8]) -> Result<(Vec<String>, Vec<String>), String> {
    use wasmparser::{Parser, Payload};
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    // Nested modules and components have sections of their own; only depth 1 is the component's.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| format!("invalid component: {e}"))? {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    let import = import.map_err(|e| format!("invalid component: {e}"))?;
                    imports.push(import.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(section) if depth == 1 => {
                for export in section {
                    let export = export.map_err(|e| format!("invalid component: {e}"))?;
                    exports.push(export.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_a_component_from_a_core_module() {
        assert!(check_component(b"\0asm\x0d\0\x01\0rest").is_ok());
        assert!(
            check_component(b"\0asm\x01\0\0\0")
                .unwrap_err()
                .contains("core Wasm module")
        );
        assert!(
            check_component(b"{}")
                .unwrap_err()
                .contains("not WebAssembly")
        );
    }
}
