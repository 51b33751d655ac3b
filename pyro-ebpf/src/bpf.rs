//! The kernel side, seen from user space: loading the embedded eBPF object, attaching it to a
//! cpu-clock perf event on every online CPU, and reading its ring buffer, pid filter and
//! counters.

use aya::maps::lpm_trie::{Key as LpmKey, LpmTrie};
use aya::maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray, ProgramArray, RingBuf};
use aya::programs::perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent};
use aya::programs::{PerfEvent, ProgramError};
use aya::{Ebpf, EbpfError, EbpfLoader};
use pyro_ebpf_common::python::PyProcConfig;
use pyro_ebpf_common::unwind::{
    GLOBAL_UNWIND_ENABLED, MAP_EXEC_MAPPINGS, MAP_UNWIND_PAGES, MAP_UNWIND_PROCS, MAP_UNWIND_PROGS,
    MAP_UNWIND_ROWS, Mapping, MappingKey, PageKey, PageValue, Row, UNWIND_PROGRAM_NAME,
};
use pyro_ebpf_common::{
    Counter, GLOBAL_COLLECT_KERNEL, GLOBAL_COLLECT_USER, GLOBAL_PYTHON_ENABLED,
    GLOBAL_TASK_TP_OFFSET, MAP_COUNTERS, MAP_EVENTS, MAP_PIDS, MAP_PY_PROCS, PROGRAM_NAME,
    PidState, PySampleRecord, SampleRecord,
};

/// The kernel side, built by `bpf-programs/build.sh` (checked by `bpf-programs/check.sh`).
static OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/pyro.bpf.o");

/// Loading or driving the kernel side failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BpfError {
    /// The object could not be loaded into the kernel (verifier, permissions, maps).
    #[error("loading the eBPF object: {0}")]
    Load(#[source] Box<EbpfError>),
    /// The object lacks a map or program this crate expects.
    #[error("the eBPF object has no {what} named {name}")]
    Missing {
        /// `map` or `program`.
        what: &'static str,
        /// Its name.
        name: &'static str,
    },
    /// A map could not be opened or used.
    #[error("eBPF map {name}: {source}")]
    Map {
        /// The map's name.
        name: &'static str,
        /// The cause.
        #[source]
        source: Box<MapError>,
    },
    /// The program could not be verified and loaded.
    #[error("loading the perf_event program: {0}")]
    Program(#[source] Box<ProgramError>),
    /// The program could not be attached to one CPU's cpu-clock event.
    #[error("attaching to the cpu-clock event of cpu {cpu}: {source}")]
    Attach {
        /// The CPU.
        cpu: u32,
        /// The cause.
        #[source]
        source: Box<ProgramError>,
    },
    /// The kernel refused a step for lack of privilege (`EPERM` or `EACCES` from creating a
    /// map, loading the program or `perf_event_open`).
    #[error(
        "loading the eBPF profiler needs root or CAP_BPF + CAP_PERFMON (and CAP_SYS_PTRACE, \
         CAP_CHECKPOINT_RESTORE to read other processes): {step}: {source}"
    )]
    Permission {
        /// What was refused, e.g. ``creating map `COUNTERS` `` or `perf_event_open on cpu 0`.
        step: String,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// The online CPUs could not be listed.
    #[error("listing online cpus from {path}: {source}")]
    OnlineCpus {
        /// The file read.
        path: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// [`BpfError::Permission`] for `step` when the kernel refused `error` (or one of its causes)
/// with `EPERM` or `EACCES`.
fn permission(
    step: impl FnOnce() -> String,
    error: &(dyn std::error::Error + 'static),
) -> Option<BpfError> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        let code = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error);
        if let Some(code @ (libc::EPERM | libc::EACCES)) = code {
            return Some(BpfError::Permission {
                step: step(),
                source: std::io::Error::from_raw_os_error(code),
            });
        }
        cause = e.source();
    }
    None
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> BpfError {
    move |source| BpfError::Map {
        name,
        source: Box::new(source),
    }
}

/// Options for [`BpfSampler::load`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct SamplerOptions {
    pub(crate) sample_rate: u32,
    pub(crate) collect_user: bool,
    pub(crate) collect_kernel: bool,
    pub(crate) python_enabled: bool,
    /// Table unwinding: kernel memory for the tables in bytes, `None` when off.
    pub(crate) unwind_bytes: Option<u64>,
}

/// Sums of the kernel side's per-CPU counters since load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Events that hit the idle task (not samples).
    pub idle: u64,
    /// Samples of processes the pid filter ignores.
    pub filtered: u64,
    /// Samples written to the ring buffer.
    pub sent: u64,
    /// Samples lost because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Samples sent without their user stack (read error).
    pub user_stack_errors: u64,
    /// Samples sent without their kernel stack (read error).
    pub kernel_stack_errors: u64,
    /// Samples of Python processes sent with a Python frame walk.
    pub python_samples: u64,
    /// Python samples whose walk failed or met an unreadable frame.
    pub python_read_errors: u64,
    /// Native samples whose user stack the table unwinder walked.
    pub table_samples: u64,
    /// Of those, samples cut at the frame limit.
    pub table_truncated: u64,
    /// Frame steps that met an unsupported row (and took the frame pointer).
    pub unsupported_rows: u64,
    /// Frame steps of the table unwinder taken by frame pointer (no table for the pc).
    pub table_fp_frames: u64,
}

/// Entries of the kernel side's per-process maps, as
/// [`Collector::kernel_map_entries`](crate::Collector::kernel_map_entries) counts them: they
/// follow the live processes, not every process ever seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelMapEntries {
    /// Processes the pid filter classified (profiled or ignored).
    pub pids: u64,
    /// CPython processes whose frames the kernel walks.
    pub python: u64,
    /// Processes with unwind tables.
    pub unwind_procs: u64,
    /// Executable mappings of those processes (LPM trie entries).
    pub unwind_mappings: u64,
    /// Pages of the loaded unwind tables.
    pub unwind_pages: u64,
}

/// The loaded and attached kernel side. Dropping it detaches the program from every CPU and
/// frees its maps.
pub(crate) struct BpfSampler {
    events: RingBuf<MapData>,
    pids: BpfHashMap<MapData, u32, u32>,
    py_procs: BpfHashMap<MapData, u32, PyProcConfig>,
    /// Whether the Python walker runs (enabled, and the thread pointer offset is known).
    python: bool,
    counters: PerCpuArray<MapData, u64>,
    unwind: Option<UnwindMaps>,
    cpus: Vec<u32>,
    // Owns the program and its perf-event links: dropping it detaches everything. Declared last
    // so the maps above are dropped first.
    _ebpf: Ebpf,
}

impl std::fmt::Debug for BpfSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BpfSampler")
            .field("cpus", &self.cpus)
            .finish_non_exhaustive()
    }
}

/// Ring buffer size: about one second of samples from every CPU, as a power of two (the kernel
/// requires one), at least 256 KiB.
fn ring_buffer_size(cpus: usize, sample_rate: u32, record_size: usize) -> u32 {
    let bytes = (cpus.max(1) as u64)
        .saturating_mul(u64::from(sample_rate))
        .saturating_mul((record_size + 8) as u64);
    bytes.clamp(256 << 10, 256 << 20).next_power_of_two() as u32
}

impl BpfSampler {
    /// Loads the object and attaches the program to the cpu-clock of every online CPU.
    pub(crate) fn load(options: SamplerOptions) -> Result<Self, BpfError> {
        raise_memlock_limit();
        let cpus = aya::util::online_cpus()
            .map_err(|(path, source)| BpfError::OnlineCpus { path, source })?;
        let collect_user = u32::from(options.collect_user);
        let collect_kernel = u32::from(options.collect_kernel);
        let tp_offset = if options.python_enabled {
            thread_pointer_offset()
        } else {
            0
        };
        let python = u32::from(options.python_enabled && tp_offset != 0);
        let unwind = options.unwind_bytes.map(UnwindSizes::for_budget);
        let mut ebpf = EbpfLoader::new()
            // The program has no CO-RE relocations: skip parsing the kernel's BTF (megabytes).
            .btf(None)
            .override_global(GLOBAL_COLLECT_USER, &collect_user, true)
            .override_global(GLOBAL_COLLECT_KERNEL, &collect_kernel, true)
            .override_global(GLOBAL_PYTHON_ENABLED, &python, true)
            .override_global(GLOBAL_TASK_TP_OFFSET, &tp_offset, true)
            .map_max_entries(
                MAP_EVENTS,
                // Python samples are the larger records.
                ring_buffer_size(
                    cpus.len(),
                    options.sample_rate,
                    if python != 0 {
                        PySampleRecord::SIZE
                    } else {
                        SampleRecord::SIZE
                    },
                ),
            )
            .override_global(GLOBAL_UNWIND_ENABLED, &u32::from(unwind.is_some()), true)
            .map_max_entries(MAP_UNWIND_ROWS, unwind.map_or(1, |u| u.rows))
            .map_max_entries(MAP_UNWIND_PAGES, unwind.map_or(1, |u| u.pages))
            .load(OBJECT)
            .map_err(|e| {
                // The cause's text (`failed to create map `COUNTERS``) names the step.
                permission(|| e.to_string(), &e).unwrap_or_else(|| BpfError::Load(Box::new(e)))
            })?;

        load_perf_event(&mut ebpf, PROGRAM_NAME, "loading the perf_event program")?;
        let unwind_maps = match unwind {
            Some(sizes) => Some(UnwindMaps::load(&mut ebpf, sizes)?),
            None => None,
        };
        let program: &mut PerfEvent = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(BpfError::Missing {
                what: "program",
                name: PROGRAM_NAME,
            })?
            .try_into()
            .map_err(|e| BpfError::Program(Box::new(e)))?;
        for &cpu in &cpus {
            program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(u64::from(options.sample_rate)),
                    false,
                )
                .map_err(|e| {
                    permission(|| format!("perf_event_open on cpu {cpu}"), &e).unwrap_or_else(
                        || BpfError::Attach {
                            cpu,
                            source: Box::new(e),
                        },
                    )
                })?;
        }

        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name)
                .ok_or(BpfError::Missing { what: "map", name })
        };
        let events =
            RingBuf::try_from(take(&mut ebpf, MAP_EVENTS)?).map_err(map_err(MAP_EVENTS))?;
        let pids = BpfHashMap::try_from(take(&mut ebpf, MAP_PIDS)?).map_err(map_err(MAP_PIDS))?;
        let py_procs =
            BpfHashMap::try_from(take(&mut ebpf, MAP_PY_PROCS)?).map_err(map_err(MAP_PY_PROCS))?;
        let counters =
            PerCpuArray::try_from(take(&mut ebpf, MAP_COUNTERS)?).map_err(map_err(MAP_COUNTERS))?;
        tracing::debug!(
            cpus = cpus.len(),
            sample_rate = options.sample_rate,
            "eBPF sampler attached."
        );
        Ok(Self {
            events,
            pids,
            py_procs,
            python: python != 0,
            counters,
            unwind: unwind_maps,
            cpus,
            _ebpf: ebpf,
        })
    }

    /// The CPUs the program is attached to.
    pub(crate) fn cpus(&self) -> &[u32] {
        &self.cpus
    }

    /// Whether the kernel side walks Python frames (`python_enabled`, and the thread pointer
    /// offset was found in the kernel's BTF).
    pub(crate) fn python(&self) -> bool {
        self.python
    }

    /// Calls `f` with every sample waiting in the ring buffer, and its Python part for samples
    /// of processes in the Python map; returns how many entries were too short to be a sample
    /// (none unless the object and this crate disagree).
    pub(crate) fn drain(
        &mut self,
        mut f: impl FnMut(&SampleRecord, Option<&PySampleRecord>),
    ) -> u64 {
        let mut malformed = 0;
        while let Some(item) = self.events.next() {
            if item.len() >= PySampleRecord::SIZE {
                match PySampleRecord::from_bytes(&item) {
                    Some(record) => f(&record.sample, Some(&record)),
                    None => malformed += 1,
                }
                continue;
            }
            match SampleRecord::from_bytes(&item) {
                Some(record) => f(&record, None),
                None => malformed += 1,
            }
        }
        malformed
    }

    /// Has the kernel side walk the Python frames of `pid` with `config`.
    pub(crate) fn set_python(&mut self, pid: u32, config: &PyProcConfig) -> Result<(), BpfError> {
        self.py_procs
            .insert(pid, *config, 0)
            .map_err(map_err(MAP_PY_PROCS))
    }

    /// Forgets the Python configuration of `pid`.
    pub(crate) fn forget_python(&mut self, pid: u32) {
        // Absent keys are not an error worth reporting.
        let _ = self.py_procs.remove(&pid);
    }

    /// Records how the kernel side treats a process from now on.
    pub(crate) fn set_pid_state(&mut self, pid: u32, state: PidState) -> Result<(), BpfError> {
        self.pids
            .insert(pid, state as u32, 0)
            .map_err(map_err(MAP_PIDS))
    }

    /// Forgets the classification of `pid` (its samples flow again until reclassified).
    pub(crate) fn forget_pid(&mut self, pid: u32) {
        // Absent keys are not an error worth reporting.
        let _ = self.pids.remove(&pid);
    }

    /// The pids the filter map holds.
    pub(crate) fn known_pids(&self) -> Vec<u32> {
        self.pids.keys().filter_map(Result::ok).collect()
    }

    /// Forgets every classification (after the targets changed), Python configurations
    /// included.
    pub(crate) fn clear_pids(&mut self) {
        for pid in self.known_pids() {
            self.forget_pid(pid);
        }
        let python: Vec<u32> = self.py_procs.keys().filter_map(Result::ok).collect();
        for pid in python {
            self.forget_python(pid);
        }
    }

    /// Counts the entries of the per-process maps (one key walk per map).
    pub(crate) fn map_entries(&self) -> KernelMapEntries {
        let mut entries = KernelMapEntries {
            pids: self.pids.keys().filter(Result::is_ok).count() as u64,
            python: self.py_procs.keys().filter(Result::is_ok).count() as u64,
            ..KernelMapEntries::default()
        };
        if let Some(u) = &self.unwind {
            entries.unwind_procs = u.procs.keys().filter(Result::is_ok).count() as u64;
            entries.unwind_mappings = u.mappings.keys().filter(Result::is_ok).count() as u64;
            entries.unwind_pages = u.pages.keys().filter(Result::is_ok).count() as u64;
        }
        entries
    }

    /// The table unwinder's maps, when table unwinding is on.
    pub(crate) fn unwind_maps(&mut self) -> Option<&mut UnwindMaps> {
        self.unwind.as_mut()
    }

    /// The counters, summed over CPUs.
    pub(crate) fn counters(&self) -> KernelCounters {
        let sum = |c: Counter| -> u64 {
            self.counters
                .get(&(c as u32), 0)
                .map(|values| values.iter().copied().fold(0u64, u64::wrapping_add))
                .unwrap_or(0)
        };
        KernelCounters {
            idle: sum(Counter::Idle),
            filtered: sum(Counter::Filtered),
            sent: sum(Counter::Sent),
            ringbuf_full: sum(Counter::RingBufFull),
            user_stack_errors: sum(Counter::UserStackError),
            kernel_stack_errors: sum(Counter::KernelStackError),
            python_samples: sum(Counter::PythonSamples),
            python_read_errors: sum(Counter::PythonReadErrors),
            table_samples: sum(Counter::TableSamples),
            table_truncated: sum(Counter::TableTruncated),
            unsupported_rows: sum(Counter::UnsupportedRows),
            table_fp_frames: sum(Counter::TableFpFrames),
        }
    }
}

/// Sizes of the table unwinder's maps for a memory budget.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UnwindSizes {
    /// Rows of the global row array.
    pub(crate) rows: u32,
    /// Entries of the page index.
    pub(crate) pages: u32,
}

/// Kernel bytes one page-index entry costs (a preallocated hash element: header, 16-byte key,
/// 8-byte value, rounded), as `bpftool map show` reports it.
pub(crate) const PAGE_ENTRY_BYTES: u64 = 72;

impl UnwindSizes {
    /// One page entry per KiB of budget (a 64 KiB page of code averages ≈ 10 KiB of rows), the
    /// rest for rows.
    pub(crate) fn for_budget(bytes: u64) -> Self {
        let pages = (bytes / 1024).clamp(1024, 1 << 20);
        let rows = bytes.saturating_sub(pages * PAGE_ENTRY_BYTES) / size_of::<Row>() as u64;
        Self {
            rows: rows.clamp(1024, u64::from(u32::MAX / 2)) as u32,
            pages: pages as u32,
        }
    }
}

/// The table unwinder's maps, held by user space: processes, mappings, pages, and the row
/// array mapped into this process.
pub(crate) struct UnwindMaps {
    pub(crate) procs: BpfHashMap<MapData, u32, u32>,
    pub(crate) mappings: LpmTrie<MapData, MappingKey, Mapping>,
    pub(crate) pages: BpfHashMap<MapData, PageKey, PageValue>,
    pub(crate) sizes: UnwindSizes,
    rows: RowsMmap,
    _rows_map: MapData,
}

/// The `BPF_F_MMAPABLE` row array, mapped shared into this process.
struct RowsMmap {
    ptr: *mut Row,
    len: usize,
}

// SAFETY: the mapping is owned by this struct and only written through `&mut self`.
unsafe impl Send for RowsMmap {}

impl Drop for RowsMmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are the mapping made in `UnwindMaps::load`.
        unsafe { libc::munmap(self.ptr.cast(), self.len * size_of::<Row>()) };
    }
}

/// Loads (verifies) the `perf_event` program `name` of `ebpf`; `step` names it in a privilege
/// error.
fn load_perf_event<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
    step: &'static str,
) -> Result<&'a mut PerfEvent, BpfError> {
    let program: &mut PerfEvent = ebpf
        .program_mut(name)
        .ok_or(BpfError::Missing {
            what: "program",
            name,
        })?
        .try_into()
        .map_err(|e| BpfError::Program(Box::new(e)))?;
    program.load().map_err(|e| {
        permission(|| step.into(), &e).unwrap_or_else(|| BpfError::Program(Box::new(e)))
    })?;
    Ok(program)
}

impl UnwindMaps {
    fn load(ebpf: &mut Ebpf, sizes: UnwindSizes) -> Result<Self, BpfError> {
        let unwinder = load_perf_event(ebpf, UNWIND_PROGRAM_NAME, "loading the table unwinder")?;
        let fd = unwinder
            .fd()
            .and_then(|fd| fd.try_clone().map_err(Into::into))
            .map_err(|e| BpfError::Program(Box::new(e)))?;
        let mut progs: ProgramArray<&mut MapData> =
            ProgramArray::try_from(ebpf.map_mut(MAP_UNWIND_PROGS).ok_or(BpfError::Missing {
                what: "map",
                name: MAP_UNWIND_PROGS,
            })?)
            .map_err(map_err(MAP_UNWIND_PROGS))?;
        progs.set(0, &fd, 0).map_err(map_err(MAP_UNWIND_PROGS))?;
        let mut take = |name: &'static str| {
            ebpf.take_map(name)
                .ok_or(BpfError::Missing { what: "map", name })
        };
        let procs =
            BpfHashMap::try_from(take(MAP_UNWIND_PROCS)?).map_err(map_err(MAP_UNWIND_PROCS))?;
        let mappings =
            LpmTrie::try_from(take(MAP_EXEC_MAPPINGS)?).map_err(map_err(MAP_EXEC_MAPPINGS))?;
        let pages =
            BpfHashMap::try_from(take(MAP_UNWIND_PAGES)?).map_err(map_err(MAP_UNWIND_PAGES))?;
        let rows_map = match take(MAP_UNWIND_ROWS)? {
            aya::maps::Map::Array(m) => m,
            _ => {
                return Err(BpfError::Missing {
                    what: "array map",
                    name: MAP_UNWIND_ROWS,
                });
            }
        };
        let len = sizes.rows as usize;
        use std::os::fd::{AsFd, AsRawFd};
        // SAFETY: mapping the whole array (created BPF_F_MMAPABLE with `len` 8-byte values)
        // shared, read-write; the kernel checks the size and flags.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len * size_of::<Row>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                rows_map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(BpfError::Map {
                name: MAP_UNWIND_ROWS,
                source: Box::new(MapError::SyscallError(aya::sys::SyscallError {
                    call: "mmap",
                    io_error: std::io::Error::last_os_error(),
                })),
            });
        }
        Ok(Self {
            procs,
            mappings,
            pages,
            sizes,
            rows: RowsMmap {
                ptr: ptr.cast(),
                len,
            },
            _rows_map: rows_map,
        })
    }

    /// Writes `rows` at index `at` of the row array; false when they do not fit.
    pub(crate) fn write_rows(&mut self, at: u32, rows: &[Row]) -> bool {
        let at = at as usize;
        if at
            .checked_add(rows.len())
            .is_none_or(|end| end > self.rows.len)
        {
            return false;
        }
        // SAFETY: bounds checked above; the mapping is ours and `Row` is plain data.
        unsafe {
            std::ptr::copy_nonoverlapping(rows.as_ptr(), self.rows.ptr.add(at), rows.len());
        }
        true
    }

    /// Key of the trie for `addr` in `tgid` with `prefix_len` bits.
    pub(crate) fn mapping_key(tgid: u32, addr: u64, prefix_len: u32) -> LpmKey<MappingKey> {
        LpmKey::new(prefix_len, MappingKey::new(tgid, addr))
    }
}

/// Offset of the thread pointer in `task_struct`, from the kernel's BTF; 0 (Python walker off,
/// logged) when it cannot be found.
fn thread_pointer_offset() -> u64 {
    const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
    match pyro_python::Btf::load(VMLINUX).and_then(|btf| pyro_python::thread_pointer_offset(&btf)) {
        Ok(offset) => offset,
        Err(error) => {
            tracing::warn!(path = VMLINUX, %error, "No thread pointer offset in the kernel BTF; Python frames are not read.");
            0
        }
    }
}

/// Kernels before 5.11 charge BPF maps to `RLIMIT_MEMLOCK`; lift it (best effort, as Alloy does).
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct; failure leaves the limit as it was.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "Could not raise RLIMIT_MEMLOCK.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_buffer_sizes_are_powers_of_two() {
        assert_eq!(ring_buffer_size(1, 1, SampleRecord::SIZE), 256 << 10);
        let two = ring_buffer_size(2, 97, SampleRecord::SIZE);
        assert!(two.is_power_of_two() && two as usize >= 2 * 97 * SampleRecord::SIZE);
        let py = ring_buffer_size(2, 97, PySampleRecord::SIZE);
        assert!(py.is_power_of_two() && py as usize >= 2 * 97 * PySampleRecord::SIZE);
        assert_eq!(
            ring_buffer_size(4096, 100_000, SampleRecord::SIZE),
            256 << 20
        );
    }

    #[test]
    fn only_eperm_and_eacces_are_privilege_errors() {
        let create = |code| {
            EbpfError::MapError(MapError::CreateError {
                name: "COUNTERS".into(),
                io_error: std::io::Error::from_raw_os_error(code),
            })
        };
        for code in [libc::EPERM, libc::EACCES] {
            let e = create(code);
            let p = permission(|| e.to_string(), &e).expect("a privilege error");
            let text = p.to_string();
            assert!(
                text.starts_with("loading the eBPF profiler needs root or CAP_BPF + CAP_PERFMON"),
                "{text}"
            );
            assert!(text.contains("COUNTERS"), "{text}");
            let BpfError::Permission { source, .. } = p else {
                panic!("not a Permission error: {p:?}");
            };
            assert_eq!(source.raw_os_error(), Some(code));
        }
        let e = create(libc::ENOMEM);
        assert!(permission(|| e.to_string(), &e).is_none());
    }
}
