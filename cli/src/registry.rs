//! `wasmgate plugin push|pull`: publish a plugin component to an OCI registry as a Wasm
//! artifact (the layout `wkg` writes), or fetch one (see [`wasmgate::plugin::oci`]).
//! Credentials, when the registry wants them, come from `WASMGATE_REGISTRY_USERNAME` and
//! `WASMGATE_REGISTRY_PASSWORD`.

use std::path::PathBuf;

use wasmgate::config::OciReference;
use wasmgate::plugin::oci;

/// Publish or fetch a plugin component in an OCI registry.
#[derive(Debug, clap::Subcommand)]
pub enum RegistryCommand {
    /// Publish a component (.wasm) under oci://HOST[:PORT]/REPOSITORY:TAG; prints its digest.
    Push {
        /// The component file.
        file: PathBuf,
        /// Where to publish it: oci://HOST[:PORT]/REPOSITORY:TAG (plain HTTP for a loopback
        /// host, or with oci+http://).
        reference: String,
    },
    /// Fetch a component from oci://HOST/REPOSITORY:TAG or @sha256:DIGEST into a file; prints
    /// its digest.
    Pull {
        reference: String,
        /// The file to write.
        #[arg(long, short)]
        output: PathBuf,
    },
}

/// Why a push or pull failed: one line.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Reference(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {why}")]
    NotComponent { file: PathBuf, why: String },
    #[error("{0}")]
    Registry(Box<oci::RegistryFailure>),
}

impl RegistryCommand {
    /// Runs the command; returns what to print (the digest, on a line).
    pub async fn run(&self) -> Result<String, RegistryError> {
        match self {
            RegistryCommand::Push { file, reference } => {
                let reference = parse(reference)?;
                let wasm = std::fs::read(file).map_err(|source| RegistryError::Read {
                    path: file.clone(),
                    source,
                })?;
                oci::check_component(&wasm).map_err(|why| RegistryError::NotComponent {
                    file: file.clone(),
                    why,
                })?;
                let digest = oci::push(&reference, &wasm, oci::Credentials::from_env())
                    .await
                    .map_err(|error| {
                        RegistryError::Registry(oci::RegistryFailure::new(&reference, error))
                    })?;
                eprintln!(
                    "pushed {} ({} bytes) as {}",
                    file.display(),
                    wasm.len(),
                    reference.pinned(&digest)
                );
                Ok(format!("{digest}\n"))
            }
            RegistryCommand::Pull { reference, output } => {
                let reference = parse(reference)?;
                let (resolved, wasm) = oci::pull(&reference, oci::Credentials::from_env())
                    .await
                    .map_err(|error| {
                        RegistryError::Registry(oci::RegistryFailure::new(&reference, error))
                    })?;
                std::fs::write(output, &wasm).map_err(|source| RegistryError::Write {
                    path: output.clone(),
                    source,
                })?;
                eprintln!(
                    "pulled {} ({} bytes) into {}",
                    resolved.reference,
                    wasm.len(),
                    output.display()
                );
                Ok(format!("{}\n", resolved.digest))
            }
        }
    }
}

fn parse(reference: &str) -> Result<OciReference, RegistryError> {
    OciReference::parse(reference).map_err(RegistryError::Reference)
}
