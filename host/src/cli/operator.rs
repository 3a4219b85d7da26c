//! The commands that talk to a running daemon over its control socket
//! (`stats`, `version`, `reload`, `engines --live`) and `engines`, which
//! shows the same records for engines loaded here.

use std::io::Write;
use std::path::PathBuf;

use super::{
    ControlArgs, EXIT_CLEAN, EXIT_ERROR, EngineSource, EnginesArgs, ReloadArgs, load_registry,
};
use crate::control::client::request;
use crate::control::engine_entries;
use crate::control::protocol::{
    ConfigReloadReply, EngineEntry, ReloadReply, Request, StatsReply, VersionReply,
};

/// The control socket: `--socket`, else the config's `control.socket`.
pub(super) fn control_socket(
    socket: &Option<PathBuf>,
    source: &EngineSource,
) -> anyhow::Result<PathBuf> {
    if let Some(s) = socket {
        return Ok(s.clone());
    }
    let config = source.resolve()?;
    config.control.socket.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no control.socket configured; pass --socket PATH",
            config.source.display()
        )
    })
}

/// Sends `req` to the daemon these flags name and reads the reply.
async fn ask<T: serde::de::DeserializeOwned>(
    args: &ControlArgs,
    req: &Request,
) -> anyhow::Result<T> {
    let socket = control_socket(&args.socket, &args.source)?;
    Ok(request(&socket, req).await?)
}

/// Prints `v` as one JSON line.
fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

pub(super) async fn stats_command(args: ControlArgs) -> anyhow::Result<i32> {
    let v: StatsReply = ask(&args, &Request::Stats).await?;
    if args.json {
        print_json(&v)?;
        return Ok(EXIT_CLEAN);
    }
    let mib = |b: u64| b as f64 / 1_048_576.0;
    println!(
        "up {:.0} s, resident {:.1} MiB (peak {:.1} MiB)",
        v.uptime_s,
        mib(v.rss_bytes.unwrap_or(0)),
        mib(v.peak_rss_bytes.unwrap_or(0))
    );
    if let Some(c) = &v.cache {
        println!(
            "cache: {} entries, {:.1} MiB, {} hits, {} misses",
            c.entries,
            mib(c.bytes as u64),
            c.hits,
            c.misses
        );
    }
    for e in &v.engines {
        println!(
            "{}: generation {} ({:.0} s old, {} alive, image {:.1} MiB){}",
            e.engine,
            e.generation,
            e.generation_age_s,
            e.generations_alive,
            mib(e.image_bytes as u64),
            if e.enabled { "" } else { ", disabled" }
        );
        let s = &e.stats;
        let faults: Vec<String> = s
            .faults
            .iter()
            .filter(|(_, n)| **n != 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!(
            "  messages {}, parts {}, detections {}, unscannable {}, cache hits {}, faults: {}",
            s.messages,
            s.parts,
            s.detections,
            s.unscannable,
            s.cache_hits,
            if faults.is_empty() {
                "none".to_string()
            } else {
                faults.join(", ")
            }
        );
        println!(
            "  per message {:.2} ms mean, {:.2} ms p99; per part {:.3} ms mean, {:.3} ms p99; reloads {} ok, {} failed",
            s.message_mean_ms,
            s.message_p99_ms,
            s.part_mean_ms,
            s.part_p99_ms,
            s.reloads_ok,
            s.reloads_failed
        );
        let calls: Vec<String> = s
            .capability_calls
            .iter()
            .filter(|(_, n)| **n != 0)
            .map(|(k, n)| format!("{} {n}", crate::text::escape(k, 64)))
            .collect();
        if !calls.is_empty() {
            println!("  capability calls: {}", calls.join(", "));
        }
        if let Some(err) = &e.last_reload_error {
            println!("  last reload failed: {}", crate::text::escape(err, 4096));
        }
    }
    Ok(EXIT_CLEAN)
}

pub(super) async fn version_command(args: ControlArgs) -> anyhow::Result<i32> {
    let v: VersionReply = ask(&args, &Request::Version).await?;
    if args.json {
        print_json(&v)?;
        return Ok(EXIT_CLEAN);
    }
    let esc = |s: &str| crate::text::escape(s, 256);
    println!("cordon {}", esc(&v.cordon));
    for e in &v.engines {
        let ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64() - e.loaded_at_unix)
            .unwrap_or(0.0);
        println!(
            "{}: {} {} by {}, definitions {}, generation {}, loaded {:.0} s ago in {:.0} ms",
            esc(&e.engine),
            esc(&e.name),
            esc(&e.version),
            esc(&e.vendor),
            esc(&e.definitions_version),
            e.generation,
            ago,
            e.load_ms
        );
    }
    Ok(EXIT_CLEAN)
}

pub(super) async fn reload_command(args: ReloadArgs) -> anyhow::Result<i32> {
    if args.config_file {
        let v: ConfigReloadReply = ask(&args.control, &Request::ReloadConfig).await?;
        if args.control.json {
            print_json(&v)?;
        } else {
            println!("{}", serde_json::to_string(&v.change)?);
        }
        return Ok(if v.change.failed.is_empty() {
            EXIT_CLEAN
        } else {
            EXIT_ERROR
        });
    }
    let v: ReloadReply = ask(&args.control, &Request::Reload(args.engine.clone())).await?;
    if args.control.json {
        print_json(&v)?;
    } else {
        for r in &v.reloaded {
            println!("{}: generation {} serving", r.engine, r.generation);
        }
        for f in &v.failed {
            eprintln!(
                "{}: reload rejected: {}",
                f.engine,
                crate::text::escape(&f.error, 4096)
            );
        }
    }
    Ok(if v.failed.is_empty() {
        EXIT_CLEAN
    } else {
        EXIT_ERROR
    })
}

pub(super) async fn engines_command(args: EnginesArgs) -> anyhow::Result<i32> {
    let rows: Vec<EngineEntry> = if args.live {
        let socket = control_socket(&args.socket, &args.source)?;
        request(&socket, &Request::Engines).await?
    } else {
        engine_entries(&*load_registry(args.source.resolve()?).await?)
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(EXIT_CLEAN);
    }
    if args.live {
        for e in &rows {
            writeln!(
                out,
                "{}: {} {}, definitions {}, generation {}{}",
                e.engine,
                e.name,
                e.version,
                e.definitions_version,
                e.generation,
                if e.enabled { "" } else { " (disabled)" }
            )?;
        }
        return Ok(EXIT_CLEAN);
    }
    writeln!(
        out,
        "{:<12} {:<10} {:<14} {:<9} {:<20} {:>8} {:>7} {:>5} {:>10}",
        "ENGINE",
        "NAME",
        "VENDOR",
        "VERSION",
        "DEFINITIONS",
        "TIMEOUT",
        "MEMORY",
        "CONC",
        "MAX-SIZE"
    )?;
    for e in &rows {
        writeln!(
            out,
            "{:<12} {:<10} {:<14} {:<9} {:<20} {:>6}ms {:>4}MiB {:>5} {:>10}{}",
            e.engine,
            e.name,
            e.vendor,
            e.version,
            e.definitions_version,
            e.limits.timeout_ms,
            e.limits.memory_mib,
            e.limits.max_concurrency,
            e.limits.max_message_bytes,
            if e.enabled { "" } else { "  (disabled)" },
        )?;
    }
    Ok(EXIT_CLEAN)
}
