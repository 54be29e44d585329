//! Broker loggers: the log levels Kafka's `kafka-configs --entity-type broker-loggers`
//! shows and changes at run time (DescribeConfigs and IncrementalAlterConfigs on resource
//! type BROKER_LOGGER). Loggers are `tracing` targets, module paths written with dots as
//! Kafka's are (`runnel_broker.log.cleaner` is the target `runnel_broker::log::cleaner`,
//! and covers the modules under it), plus `root` for the default level. As Kafka lists
//! every logger it has, the broker's modules are listed, each with its effective level.
//!
//! [`init`] installs the process's subscriber with a filter that can be reloaded; the
//! starting directives come from `RUNNEL_LOG` (or the default) and changes made over the
//! protocol last until the process exits, as Kafka's do.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// The logger that stands for the default level.
pub const ROOT: &str = "root";

/// Levels by logger, as a filter's directives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Levels {
    root: String,
    loggers: BTreeMap<String, String>,
    /// Directives this module does not describe (span or field filters), kept as given.
    other: Vec<String>,
}

/// Kafka's level names to `tracing`'s.
fn tracing_level(kafka: &str) -> Option<&'static str> {
    Some(match kafka.to_ascii_uppercase().as_str() {
        "ALL" | "TRACE" => "trace",
        "DEBUG" => "debug",
        "INFO" => "info",
        "WARN" => "warn",
        "ERROR" | "FATAL" => "error",
        "OFF" => "off",
        _ => return None,
    })
}

/// The modules listed whether or not a level was set for them.
const MODULES: &[&str] = &[
    "runnel",
    "runnel_api",
    "runnel_broker",
    "runnel_broker::broker",
    "runnel_broker::group",
    "runnel_broker::handlers",
    "runnel_broker::log",
    "runnel_broker::log::cleaner",
    "runnel_broker::partition",
    "runnel_broker::server",
    "runnel_broker::topics",
    "runnel_broker::txn",
    "runnel_broker::wire",
];

/// A logger's target: `a.b` is `a::b`.
fn target(logger: &str) -> String {
    logger.replace('.', "::")
}

fn valid_logger(name: &str) -> bool {
    name.split("::")
        .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

impl Levels {
    /// Reads `EnvFilter` directives: `level` for the root, `target=level` per logger.
    pub fn parse(directives: &str) -> Self {
        let mut l = Levels {
            root: "error".into(),
            loggers: BTreeMap::new(),
            other: Vec::new(),
        };
        for d in directives
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            match d.split_once('=') {
                None if tracing_level(d).is_some() => {
                    l.root = tracing_level(d).unwrap_or("error").into()
                }
                Some((t, v)) if valid_logger(t) && tracing_level(v).is_some() => {
                    l.loggers
                        .insert(t.into(), tracing_level(v).unwrap_or("error").into());
                }
                _ => l.other.push(d.into()),
            }
        }
        l
    }

    /// The directives for an `EnvFilter`.
    pub fn directives(&self) -> String {
        let mut out = vec![self.root.clone()];
        out.extend(self.loggers.iter().map(|(t, v)| format!("{t}={v}")));
        out.extend(self.other.iter().cloned());
        out.join(",")
    }

    /// The level a target logs at: its own, else its nearest parent module's, else the
    /// root's.
    fn effective(&self, target: &str) -> &str {
        let mut t = target;
        loop {
            if let Some(v) = self.loggers.get(t) {
                return v;
            }
            match t.rfind("::") {
                Some(i) => t = &t[..i],
                None => return &self.root,
            }
        }
    }

    /// (logger, Kafka level name): the root, then the broker's modules and every logger
    /// given a level, by name.
    pub fn describe(&self) -> Vec<(String, String)> {
        let mut targets: Vec<&str> = MODULES.to_vec();
        targets.extend(self.loggers.keys().map(String::as_str));
        targets.sort_unstable();
        targets.dedup();
        std::iter::once((ROOT.to_string(), self.root.to_ascii_uppercase()))
            .chain(
                targets
                    .into_iter()
                    .map(|t| (t.replace("::", "."), self.effective(t).to_ascii_uppercase())),
            )
            .collect()
    }

    /// Sets `logger` to a Kafka level name.
    pub fn set(&mut self, logger: &str, level: &str) -> Result<(), String> {
        let Some(v) = tracing_level(level) else {
            return Err(format!(
                "Cannot set the log level of {logger} to {level} as it is not a supported log level. Valid log levels are ALL, TRACE, DEBUG, INFO, WARN, ERROR, FATAL, OFF"
            ));
        };
        let t = target(logger);
        if logger == ROOT {
            self.root = v.into();
        } else if valid_logger(&t) {
            self.loggers.insert(t, v.into());
        } else {
            return Err(format!(
                "Invalid logger name {logger:?}: a module path such as runnel_broker.log"
            ));
        }
        Ok(())
    }

    /// Gives `logger` the root's level again.
    pub fn delete(&mut self, logger: &str) -> Result<(), String> {
        if logger == ROOT {
            return Err("Removing the log level of the root logger is not allowed".into());
        }
        self.loggers.remove(&target(logger));
        Ok(())
    }
}

struct Installed {
    levels: Levels,
    handle: reload::Handle<EnvFilter, Registry>,
}

static INSTALLED: OnceLock<Mutex<Installed>> = OnceLock::new();

/// Installs the process's subscriber (stderr, ANSI colours on a terminal) filtered by
/// `RUNNEL_LOG` or else `default_directives`, with levels changeable at run time.
pub fn init(default_directives: &str) {
    let directives = std::env::var("RUNNEL_LOG").unwrap_or_else(|_| default_directives.into());
    let levels = Levels::parse(&directives);
    let filter = EnvFilter::try_new(levels.directives())
        .unwrap_or_else(|_| EnvFilter::new(default_directives));
    let (layer, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if tracing_subscriber::registry()
        .with(layer)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        let _ = INSTALLED.set(Mutex::new(Installed { levels, handle }));
    }
}

/// The current levels, or `None` if [`init`] did not install the subscriber.
pub fn current() -> Option<Levels> {
    let i = INSTALLED.get()?.lock().unwrap_or_else(|p| p.into_inner());
    Some(i.levels.clone())
}

/// Applies `change` to the levels (unless `validate_only`) and reloads the filter.
pub fn update(
    validate_only: bool,
    change: impl FnOnce(&mut Levels) -> Result<(), String>,
) -> Result<(), String> {
    let Some(cell) = INSTALLED.get() else {
        return Err("This broker's loggers cannot be changed at run time".into());
    };
    let mut i = cell.lock().unwrap_or_else(|p| p.into_inner());
    let mut next = i.levels.clone();
    change(&mut next)?;
    let filter = EnvFilter::try_new(next.directives()).map_err(|e| e.to_string())?;
    if validate_only {
        return Ok(());
    }
    i.handle.reload(filter).map_err(|e| e.to_string())?;
    i.levels = next;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_read_change_and_write_filter_directives() {
        let mut l = Levels::parse("info,runnel_broker::log=debug,[span]=trace");
        let level = |d: &[(String, String)], name: &str| {
            d.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
        };
        let d = l.describe();
        assert_eq!(d[0], ("root".to_string(), "INFO".to_string()));
        assert_eq!(level(&d, "runnel_broker.log").as_deref(), Some("DEBUG"));
        assert_eq!(
            level(&d, "runnel_broker.log.cleaner").as_deref(),
            Some("DEBUG"),
            "inherited"
        );
        assert_eq!(
            level(&d, "runnel_broker.server").as_deref(),
            Some("INFO"),
            "the root's"
        );
        l.set("runnel_broker.server", "FATAL").unwrap();
        l.set("root", "warn").unwrap();
        assert_eq!(
            l.directives(),
            "warn,runnel_broker::log=debug,runnel_broker::server=error,[span]=trace"
        );
        assert!(
            l.set("x", "LOUD")
                .unwrap_err()
                .contains("not a supported log level")
        );
        assert!(l.set("bad name", "INFO").is_err());
        assert!(l.set("a..b", "INFO").is_err());
        assert!(l.delete("root").is_err());
        l.delete("runnel_broker.log").unwrap();
        assert_eq!(
            l.directives(),
            "warn,runnel_broker::server=error,[span]=trace"
        );
        l.set("my_plugin.sub", "TRACE").unwrap();
        assert_eq!(
            level(&l.describe(), "my_plugin.sub").as_deref(),
            Some("TRACE")
        );
        assert_eq!(Levels::parse("").describe()[0].1, "ERROR");
    }
}
