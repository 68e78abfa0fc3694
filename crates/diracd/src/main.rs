//! `diracd`: the composition root. `diracd all` runs every service and agent
//! in one process on one port (the embedded installation); `diracd serve
//! wms|dms|rms|auth` one subsystem's services (a Kubernetes Deployment behind
//! envoy); `diracd agent NAME` one agent; `diracd token`
//! signs a token for a registered user; `diracd check-config` validates a
//! configuration file.

mod embedded;
mod keys;
mod serve;
mod site_director;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "diracd", version, about = "DIRAC services and agents")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a server keeps its files and listens.
#[derive(clap::Args)]
pub struct ServerArgs {
    /// Directory for databases, keys, scratch space and client.yaml.
    #[arg(long, default_value = ".dirac")]
    pub data_dir: PathBuf,
    /// Address of the gRPC services (overrides Services.Listen).
    #[arg(long)]
    pub listen: Option<String>,
    /// Address of the AuthServer's HTTP endpoints (overrides
    /// Services.Auth.HttpListen).
    #[arg(long)]
    pub auth_listen: Option<String>,
    /// Configuration file (default: DATA_DIR/dirac.yaml, created when missing).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl ServerArgs {
    /// The configuration with the command line's addresses (not yet
    /// validated: callers may add their own defaults first).
    pub fn load(&self) -> anyhow::Result<dirac_core::config::DiracConfig> {
        use anyhow::Context as _;
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("create {}", self.data_dir.display()))?;
        let mut config = embedded::load_config(&self.data_dir, self.config.clone())?;
        if let Some(l) = &self.listen {
            config.services.listen.clone_from(l);
        }
        if let Some(l) = &self.auth_listen {
            config.services.auth.http_listen.clone_from(l);
        }
        Ok(config)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run every service and agent in one process (SQLite by default).
    All(ServerArgs),
    /// Serve one subsystem's services (a Kubernetes Deployment behind
    /// envoy): wms, dms, rms or auth.
    Serve {
        subsystem: serve::Subsystem,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print a signed access token for a registered user.
    Token {
        #[arg(long, default_value = ".dirac")]
        data_dir: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        /// User name as in Registry.VOs.<vo>.Users.
        #[arg(long)]
        user: String,
        /// VO (default: the first VO the user is registered in).
        #[arg(long)]
        vo: Option<String>,
        /// Group (default: the VO's DefaultGroup if the user is in it).
        #[arg(long)]
        group: Option<String>,
        /// Lifetime in seconds (default: Services.Auth.TokenLifetime).
        #[arg(long)]
        lifetime: Option<u64>,
    },
    /// Run one agent on its own: optimizer, stalled-jobs, job-cleaning,
    /// task-queues, pilot-status, request-executing, clean-reqdb (several
    /// replicas may run at once) or
    /// site-director (one per set of queues: `Services.SiteDirector.Sites`/
    /// `CETypes`).
    Agent {
        name: String,
        #[arg(long, default_value = ".dirac")]
        data_dir: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        /// One cycle, then exit (for Kubernetes CronJobs).
        #[arg(long)]
        once: bool,
    },
    /// Retire the signing key and create a new one (old tokens stay valid
    /// while the retired key is kept).
    RotateKey {
        #[arg(long, default_value = ".dirac")]
        data_dir: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and print the effective configuration.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::All(server) => runtime.block_on(embedded::run_all(&server)),
        Command::Serve { subsystem, server } => runtime.block_on(serve::run(subsystem, &server)),
        Command::Token {
            data_dir,
            config,
            user,
            vo,
            group,
            lifetime,
        } => {
            let token = embedded::token(
                &data_dir,
                config,
                &user,
                vo.as_deref(),
                group.as_deref(),
                lifetime,
            )?;
            println!("{token}");
            Ok(())
        }
        Command::Agent {
            name,
            data_dir,
            config,
            once,
        } => runtime.block_on(embedded::run_agent(&name, &data_dir, config, once)),
        Command::RotateKey { data_dir, config } => {
            let kid = embedded::rotate_key(&data_dir, config)?;
            println!("new signing key {kid}; restart diracd to sign with it");
            Ok(())
        }
        Command::CheckConfig { config } => {
            let c = dirac_core::config::DiracConfig::load(
                Some(&config),
                &dirac_core::config::ProcessEnv,
            )?;
            print!("{}", serde_yaml_ng::to_string(&c)?);
            Ok(())
        }
    }
}
