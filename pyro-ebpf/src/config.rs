//! [`EbpfConfig`]: the collector's settings, named and defaulted like the arguments of Alloy's
//! `pyroscope.ebpf` component.

use std::time::Duration;

use pyro_symbolize::Demangle;
use serde::{Deserialize, Serialize};

/// Settings of the eBPF CPU profiler, as Alloy's `pyroscope.ebpf` arguments (legacy engine)
/// with the same names and defaults. Plain data, deserializable from JSON with Alloy's argument
/// names (unknown fields are refused); the runtime objects — `targets`, `forward_to`, metrics —
/// are given to [`Collector::builder`](crate::Collector::builder), which checks the config and
/// builds the running collector from it.
///
/// ```
/// use std::time::Duration;
/// use pyro_ebpf::EbpfConfig;
/// use pyro_symbolize::Demangle;
///
/// let config: EbpfConfig =
///     serde_json::from_str(r#"{"collect_interval": "10s", "demangle": "simplified"}"#).unwrap();
/// assert_eq!(config.collect_interval, Duration::from_secs(10));
/// assert_eq!(config.demangle, Demangle::Simplified);
/// assert_eq!(config.sample_rate, 97);
/// assert!(config.validate().is_ok());
/// let typo = serde_json::from_str::<EbpfConfig>(r#"{"sample_rat": 99}"#).unwrap_err();
/// assert!(typo.to_string().contains("sample_rat"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EbpfConfig {
    /// How often one profile per target and process is built and sent (`collect_interval`, 15 s).
    #[serde(with = "pyro_core::config::duration")]
    pub collect_interval: Duration,
    /// Samples per second on each CPU (`sample_rate`, 97).
    pub sample_rate: u32,
    /// Processes whose symbol state is cached (`pid_cache_size`, 32).
    pub pid_cache_size: usize,
    /// ELF symbol tables cached by build id (`build_id_cache_size`, 64).
    pub build_id_cache_size: usize,
    /// ELF symbol tables cached by file identity (`same_file_cache_size`, 8).
    pub same_file_cache_size: usize,
    /// Process → container id entries cached (`container_id_cache_size`, 1024).
    pub container_id_cache_size: usize,
    /// Capture user-space stacks (`collect_user_profile`, true).
    pub collect_user_profile: bool,
    /// Capture kernel stacks (`collect_kernel_profile`, true).
    pub collect_kernel_profile: bool,
    /// Read the Python frames of CPython 3.8–3.15 processes (`python_enabled`, true): their
    /// samples show `"<file> <Class.function>"` frames from the module level down instead of
    /// the interpreter's native frames. Other versions keep native stacks (logged once,
    /// counted in `pyroscope_ebpf_python_unsupported_total`).
    pub python_enabled: bool,
    /// C++/Rust demangling: `none`, `simplified`, `templates` or `full` (`demangle`, `none`).
    pub demangle: Demangle,
    /// pyro-only (no Alloy argument): give native frames file, line and inlined functions from
    /// DWARF (in the binary or its separate debug file), as one pprof Location per address with
    /// one Line per inline level (true).
    pub debug_info: bool,
    /// pyro-only: bytes of DWARF kept loaded for all processes together (268435456 = 256 MiB;
    /// least recently used files are dropped first).
    pub debug_info_memory_limit: u64,
    /// pyro-only: unwind native user stacks from `.eh_frame` tables in the kernel
    /// (`unwind_tables_enabled`, true), so code without frame pointers (libc, `-O2` C/C++, Rust
    /// release builds, frameless leaves) keeps its callers; mappings without a table (JIT,
    /// anonymous memory) still use the frame pointer. Off: the kernel's frame-pointer walk only.
    pub unwind_tables_enabled: bool,
    /// pyro-only: kernel memory for unwind tables, in MiB (`unwind_tables_memory_mib`, 32),
    /// allocated when the profiler starts (one row array and the page index); tables of the
    /// least recently seen files are evicted beyond it, their processes falling back to frame
    /// pointers. 1 to 1024.
    pub unwind_tables_memory_mib: u32,
    /// Profile only the processes that match a target (`targets_only`, true). False: every
    /// other user-space process is profiled too, under Alloy's default target
    /// `{service_name="ebpf/unspecified"}` (kernel threads are left out).
    pub targets_only: bool,
    /// Give every sample the pprof sample label `pid` (`pid_label`, false), as Alloy ≥ 1.15.
    pub pid_label: bool,
}

impl Default for EbpfConfig {
    fn default() -> Self {
        Self {
            collect_interval: Duration::from_secs(15),
            sample_rate: 97,
            pid_cache_size: 32,
            build_id_cache_size: 64,
            same_file_cache_size: 8,
            container_id_cache_size: 1024,
            collect_user_profile: true,
            collect_kernel_profile: true,
            python_enabled: true,
            demangle: Demangle::None,
            debug_info: true,
            debug_info_memory_limit: 256 << 20,
            unwind_tables_enabled: true,
            unwind_tables_memory_mib: 32,
            targets_only: true,
            pid_label: false,
        }
    }
}

/// Highest accepted `sample_rate`: the kernel's default `perf_event_max_sample_rate` is 100 000,
/// and far lower rates are already costly.
pub const MAX_SAMPLE_RATE: u32 = 10_000;

/// An [`EbpfConfig`] value is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `sample_rate` is 0 or above [`MAX_SAMPLE_RATE`].
    #[error("sample_rate must be between 1 and {MAX_SAMPLE_RATE}, got {value}")]
    SampleRate {
        /// The value given.
        value: u32,
    },
    /// `collect_interval` is zero.
    #[error("collect_interval must be positive")]
    CollectInterval,
    /// A cache size is zero.
    #[error("{name} must be positive")]
    CacheSize {
        /// The argument's name.
        name: &'static str,
    },
    /// A setting that cannot take effect where it was given.
    #[error("{field} has no effect here: {reason}")]
    NoEffect {
        /// The argument's name.
        field: &'static str,
        /// Why, and what to do instead.
        reason: &'static str,
    },
    /// `unwind_tables_memory_mib` is 0 or above 1024.
    #[error("unwind_tables_memory_mib must be between 1 and 1024, got {value}")]
    UnwindMemory {
        /// The value given.
        value: u32,
    },
    /// Neither user nor kernel stacks are collected: every profile would be empty.
    #[error("collect_user_profile and collect_kernel_profile are both false")]
    NothingToCollect,
}

impl EbpfConfig {
    /// Checks every value, returning the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.sample_rate == 0 || self.sample_rate > MAX_SAMPLE_RATE {
            return Err(ConfigError::SampleRate {
                value: self.sample_rate,
            });
        }
        if self.collect_interval.is_zero() {
            return Err(ConfigError::CollectInterval);
        }
        for (name, size) in [
            ("pid_cache_size", self.pid_cache_size),
            ("build_id_cache_size", self.build_id_cache_size),
            ("same_file_cache_size", self.same_file_cache_size),
            ("container_id_cache_size", self.container_id_cache_size),
        ] {
            if size == 0 {
                return Err(ConfigError::CacheSize { name });
            }
        }
        if self.unwind_tables_memory_mib == 0 || self.unwind_tables_memory_mib > 1024 {
            return Err(ConfigError::UnwindMemory {
                value: self.unwind_tables_memory_mib,
            });
        }
        if !self.collect_user_profile && !self.collect_kernel_profile {
            return Err(ConfigError::NothingToCollect);
        }
        if self.debug_info && self.debug_info_memory_limit == 0 {
            return Err(ConfigError::NoEffect {
                field: "debug_info_memory_limit",
                reason: "0 bytes can hold no debug info; set debug_info = false to turn it off",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_alloys() {
        let c = EbpfConfig::default();
        assert_eq!(c.collect_interval, Duration::from_secs(15));
        assert_eq!(c.sample_rate, 97);
        assert_eq!(
            (
                c.pid_cache_size,
                c.build_id_cache_size,
                c.same_file_cache_size,
                c.container_id_cache_size
            ),
            (32, 64, 8, 1024)
        );
        assert!(c.collect_user_profile && c.collect_kernel_profile);
        assert_eq!(c.demangle, Demangle::None);
        assert!(c.debug_info);
        assert_eq!(c.debug_info_memory_limit, 256 << 20);
        let zero = EbpfConfig {
            debug_info_memory_limit: 0,
            ..EbpfConfig::default()
        };
        assert!(
            zero.validate()
                .unwrap_err()
                .to_string()
                .contains("debug_info_memory_limit")
        );
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn invalid_values_are_typed_errors() {
        let bad = |f: fn(&mut EbpfConfig)| {
            let mut c = EbpfConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(
            bad(|c| c.sample_rate = 0),
            ConfigError::SampleRate { value: 0 }
        );
        assert!(matches!(
            bad(|c| c.sample_rate = 1_000_000),
            ConfigError::SampleRate { .. }
        ));
        assert_eq!(
            bad(|c| c.collect_interval = Duration::ZERO),
            ConfigError::CollectInterval
        );
        assert_eq!(
            bad(|c| c.container_id_cache_size = 0),
            ConfigError::CacheSize {
                name: "container_id_cache_size"
            }
        );
        assert_eq!(
            bad(|c| {
                c.collect_user_profile = false;
                c.collect_kernel_profile = false;
            }),
            ConfigError::NothingToCollect
        );
    }

    #[test]
    fn deserializes_alloys_names_and_refuses_unknown_ones() {
        let c: EbpfConfig = serde_json::from_str(
            r#"{"collect_interval":"1m","sample_rate":49,"pid_cache_size":7,
                "build_id_cache_size":3,"same_file_cache_size":2,"container_id_cache_size":9,
                "collect_user_profile":false,"collect_kernel_profile":true,
                "python_enabled":false,"demangle":"templates"}"#,
        )
        .unwrap();
        assert_eq!(c.collect_interval, Duration::from_secs(60));
        assert_eq!((c.sample_rate, c.pid_cache_size), (49, 7));
        assert_eq!(c.demangle, Demangle::Templates);
        assert!(!c.python_enabled && !c.collect_user_profile);
        for (json, field) in [
            (r#"{"forward_to":[]}"#, "forward_to"),
            (r#"{"targets":[]}"#, "targets"),
            (r#"{"demangle":"everything"}"#, "everything"),
            (r#"{"collect_interval":15}"#, "duration"),
            (r#"{"collect_interval":"15 seconds"}"#, "15 seconds"),
        ] {
            let e = serde_json::from_str::<EbpfConfig>(json)
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{json}: {e}");
        }
        let back: EbpfConfig =
            serde_json::from_str(&serde_json::to_string(&EbpfConfig::default()).unwrap()).unwrap();
        assert_eq!(back, EbpfConfig::default());
    }
}
