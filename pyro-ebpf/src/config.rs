//! [`EbpfConfig`]: the collector's settings, named and defaulted like the arguments of Alloy's
//! `pyroscope.ebpf` component.

use std::str::FromStr;
use std::time::Duration;

use pyro_core::{DynReceiver, Target};
use pyro_symbolize::Demangle;

/// Settings of the eBPF CPU profiler, as Alloy's `pyroscope.ebpf` arguments (legacy engine)
/// with the same defaults. Plain data: [`Collector::builder`](crate::Collector::builder) checks
/// it and builds the running collector from it.
///
/// ```
/// use std::time::Duration;
/// use pyro_ebpf::EbpfConfig;
///
/// let config = EbpfConfig {
///     collect_interval: Duration::from_secs(10),
///     demangle: "simplified".into(),
///     ..EbpfConfig::default()
/// };
/// assert_eq!(config.sample_rate, 97);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone)]
pub struct EbpfConfig {
    /// What to profile: processes matched by `__process_pid__`, else by container id
    /// (`__container_id__`, `__meta_kubernetes_pod_container_id`, `__meta_docker_container_id`).
    /// Processes matching no target are not profiled. Replaceable while running
    /// ([`CollectorHandle::set_targets`](crate::CollectorHandle::set_targets)).
    pub targets: Vec<Target>,
    /// Where the profiles go (`forward_to`); each profile is sent to every receiver.
    pub forward_to: Vec<DynReceiver>,
    /// How often one profile per target and process is built and sent (`collect_interval`, 15 s).
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
    /// Read the Python frames of CPython 3.8–3.13 processes (`python_enabled`, true): their
    /// samples show `"<file> <Class.function>"` frames from the module level down instead of
    /// the interpreter's native frames. Other versions keep native stacks (logged once,
    /// counted in `pyroscope_ebpf_python_unsupported_total`).
    pub python_enabled: bool,
    /// C++/Rust demangling: `none`, `simplified`, `templates` or `full` (`demangle`, `none`).
    pub demangle: String,
}

impl Default for EbpfConfig {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            forward_to: Vec::new(),
            collect_interval: Duration::from_secs(15),
            sample_rate: 97,
            pid_cache_size: 32,
            build_id_cache_size: 64,
            same_file_cache_size: 8,
            container_id_cache_size: 1024,
            collect_user_profile: true,
            collect_kernel_profile: true,
            python_enabled: true,
            demangle: "none".to_owned(),
        }
    }
}

impl std::fmt::Debug for EbpfConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbpfConfig")
            .field("targets", &self.targets.len())
            .field("forward_to", &self.forward_to.len())
            .field("collect_interval", &self.collect_interval)
            .field("sample_rate", &self.sample_rate)
            .field("pid_cache_size", &self.pid_cache_size)
            .field("build_id_cache_size", &self.build_id_cache_size)
            .field("same_file_cache_size", &self.same_file_cache_size)
            .field("container_id_cache_size", &self.container_id_cache_size)
            .field("collect_user_profile", &self.collect_user_profile)
            .field("collect_kernel_profile", &self.collect_kernel_profile)
            .field("python_enabled", &self.python_enabled)
            .field("demangle", &self.demangle)
            .finish()
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
    /// `demangle` is not one of the known modes.
    #[error(transparent)]
    Demangle(#[from] pyro_symbolize::ParseDemangleError),
    /// Neither user nor kernel stacks are collected: every profile would be empty.
    #[error("collect_user_profile and collect_kernel_profile are both false")]
    NothingToCollect,
}

impl EbpfConfig {
    /// Checks every value, returning the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.demangle_mode().map(|_| ())
    }

    /// The parsed demangle mode, after checking every other value.
    pub(crate) fn demangle_mode(&self) -> Result<Demangle, ConfigError> {
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
        if !self.collect_user_profile && !self.collect_kernel_profile {
            return Err(ConfigError::NothingToCollect);
        }
        Ok(Demangle::from_str(&self.demangle)?)
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
        assert_eq!(c.demangle, "none");
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
        assert!(matches!(
            bad(|c| c.demangle = "fancy".into()),
            ConfigError::Demangle(e) if e.mode == "fancy"
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
        for mode in ["none", "simplified", "templates", "full"] {
            let c = EbpfConfig {
                demangle: mode.into(),
                ..EbpfConfig::default()
            };
            assert_eq!(c.validate(), Ok(()), "{mode}");
        }
    }
}
