//! `wasmgate plugin new|build|test`: writing a plugin without a running gateway. `new` writes a
//! project from a template (Rust, Python, JavaScript or C; a router or a probe evaluator),
//! `build` runs the language's toolchain and says how to install a missing one, `test` loads a
//! component with the gateway's own plugin engine and asks it about one request, one probe
//! response or the samples of a configuration file.

use std::path::PathBuf;

pub mod project;
pub mod scaffold;
pub mod toolchain;
pub mod trial;

pub use project::{Kind, Language, Project};

/// Writing, building and trying a plugin.
#[derive(Debug, clap::Subcommand)]
pub enum AuthoringCommand {
    /// Create a plugin project from a template: the source, the WIT, a gateway configuration
    /// with samples, and a test.
    New(scaffold::NewArgs),
    /// Build a plugin project into NAME.wasm with its language's toolchain (detected from the
    /// project's files); when a tool is missing, say how to install it.
    Build {
        /// The project's folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Load a component with the gateway's plugin engine and ask it about a request (a router),
    /// a probe response (a probe evaluator) or a configuration's samples, without a gateway.
    /// Exits 1 when the plugin fails or a sample is answered differently.
    Test(Box<trial::TestArgs>),
}

impl AuthoringCommand {
    /// Runs the command; `Ok(false)` when it ran but the plugin failed (exit code 1).
    pub fn run(&self) -> anyhow::Result<bool> {
        match self {
            AuthoringCommand::New(args) => {
                let dir = scaffold::create(args)?;
                print!("{}", scaffold::next_steps(args, &dir));
                Ok(true)
            }
            AuthoringCommand::Build { dir } => {
                let built = toolchain::build(dir)?;
                println!(
                    "built {} ({} KB) in {:.1} s",
                    built.path.display(),
                    built.bytes.div_ceil(1024),
                    built.time.as_secs_f64()
                );
                Ok(true)
            }
            AuthoringCommand::Test(args) => trial::run(args),
        }
    }
}
