//! `trireme certs`: what certificates this host holds and until when, and renewing them now —
//! kubeadm's `certs check-expiration` and `certs renew all`. Masters renew theirs by themselves
//! within 30 days of expiry; this is for looking, and for renewing early.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use clap::Subcommand;

use crate::pki;

/// `trireme certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// The directory holding the certificates: a master's `DATA-DIR/pki`, or a `trireme up`
    /// cluster's `DIR/pki`.
    #[arg(long, global = true, default_value = "/var/lib/trireme/pki")]
    pki_dir: PathBuf,
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// List every certificate with its expiry and the time left.
    CheckExpiration,
    /// Issue every leaf certificate again now (same names, addresses and usages; a new key and
    /// a new validity); servers pick them up at their next handshake, without a restart.
    Rotate,
}

/// Runs a `trireme certs` command.
pub fn run(args: CertsArgs) -> Result<()> {
    match args.command {
        CertsCommand::CheckExpiration => check_expiration(&args.pki_dir),
        CertsCommand::Rotate => {
            let renewed = pki::renew(&args.pki_dir, None)?;
            for name in &renewed {
                println!("renewed {name}");
            }
            println!("{} certificates renewed in {}", renewed.len(), args.pki_dir.display());
            Ok(())
        }
    }
}

fn check_expiration(dir: &std::path::Path) -> Result<()> {
    let all = pki::certificates(dir)?;
    let now = time::OffsetDateTime::now_utc();
    let when = |t: time::OffsetDateTime| {
        let format = time::macros::format_description!("[month repr:short] [day], [year] [hour]:[minute] UTC");
        t.format(&format).unwrap_or_else(|_| t.to_string())
    };
    let left = |t: time::OffsetDateTime| residual(t - now);
    let name_of = |subject: &str| -> String {
        subject.split(", ").find_map(|p| p.strip_prefix("CN=")).unwrap_or(subject).to_string()
    };
    println!("{:<24} {:<24} {:<14} CERTIFICATE AUTHORITY", "CERTIFICATE", "EXPIRES", "RESIDUAL TIME");
    for c in all.iter().filter(|c| !c.info.is_ca) {
        println!(
            "{:<24} {:<24} {:<14} {}",
            c.name,
            when(c.info.not_after),
            left(c.info.not_after),
            name_of(&c.info.issuer)
        );
    }
    println!();
    println!("{:<24} {:<24} {:<14} KEY HERE", "CERTIFICATE AUTHORITY", "EXPIRES", "RESIDUAL TIME");
    for c in all.iter().filter(|c| c.info.is_ca) {
        let key = if c.key.exists() { "yes" } else { "no" };
        println!("{:<24} {:<24} {:<14} {key}", c.name, when(c.info.not_after), left(c.info.not_after));
    }
    Ok(())
}

/// `364d`, `9y`, `5h`, or `expired` — as kubeadm prints residual time.
fn residual(d: time::Duration) -> String {
    let days = d.whole_days();
    if d.is_negative() {
        "expired".into()
    } else if days >= 365 {
        format!("{}y", days / 365)
    } else if days >= 1 {
        format!("{days}d")
    } else {
        format!("{}h", d.whole_hours())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residual_time_reads_as_kubeadm_prints_it() {
        assert_eq!(residual(time::Duration::days(3650)), "10y");
        assert_eq!(residual(time::Duration::days(364)), "364d");
        assert_eq!(residual(time::Duration::hours(5)), "5h");
        assert_eq!(residual(time::Duration::hours(-1)), "expired");
    }
}
