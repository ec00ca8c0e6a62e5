//! How busy the server's CPUs were during the measured phase (`--server-cpus`).
//!
//! Throughput alone does not say whether a server was the limit: a server that waits on its
//! disk or on its clients' round trips leaves its core partly idle, and its ops/s then measure
//! the latency of the loop, not what the core can do. Where the server runs on this host,
//! pinned to known CPUs (as `scripts/compare-zookeeper` does), the load generator reads those
//! CPUs' counters from `/proc/stat` at the start and the end of the measured phase. Busy time
//! counts everything the CPUs did (the server's threads, the kernel's network and block work
//! done there, anything else pinned there), which is why the server's CPUs should hold nothing
//! else; steal time (the hypervisor running something else) counts as not busy.

/// One or more CPUs' counters, summed, in the kernel's clock ticks (`USER_HZ`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTicks {
    /// user + nice + system + irq + softirq.
    pub busy: u64,
    /// busy + idle + iowait + steal.
    pub total: u64,
}

impl CpuTicks {
    /// The ticks from `earlier` to `self`.
    pub fn since(self, earlier: CpuTicks) -> CpuTicks {
        CpuTicks {
            busy: self.busy.saturating_sub(earlier.busy),
            total: self.total.saturating_sub(earlier.total),
        }
    }
}

/// What the CPUs did between two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Wall time between the samples.
    pub secs: f64,
    pub ticks: CpuTicks,
    pub ticks_per_sec: f64,
}

/// Parses a CPU list as `taskset -c` takes it: `0`, `0-3`, `0,2,8-11`.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("'{text}' is not a CPU list (like 0 or 0-3,8)");
    let mut cpus = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
            None => {
                let cpu: usize = part.parse().map_err(|_| bad())?;
                (cpu, cpu)
            }
        };
        if first > last || last >= crate::limits::SERVER_CPU_MAX {
            return Err(bad());
        }
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Sums the counters of `cpus` from the text of `/proc/stat`; every CPU must be there.
pub fn ticks_from_proc_stat(text: &str, cpus: &[usize]) -> Result<CpuTicks, String> {
    let mut sum = CpuTicks::default();
    for &cpu in cpus {
        let label = format!("cpu{cpu}");
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(label.as_str()))
            .ok_or_else(|| format!("CPU {cpu} is not in /proc/stat (not online here?)"))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse::<u64>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("cannot read the counters of CPU {cpu} in /proc/stat"))?;
        // user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is
        // already counted in user and nice.
        let at = |i: usize| fields.get(i).copied().unwrap_or(0);
        if fields.len() < 4 {
            return Err(format!("too few counters for CPU {cpu} in /proc/stat"));
        }
        let busy = at(0) + at(1) + at(2) + at(5) + at(6);
        sum.busy += busy;
        sum.total += busy + at(3) + at(4) + at(7);
    }
    Ok(sum)
}

/// Reads the counters of `cpus` now.
pub fn sample(cpus: &[usize]) -> Result<CpuTicks, String> {
    let text = std::fs::read_to_string("/proc/stat")
        .map_err(|e| format!("cannot read /proc/stat: {e}"))?;
    ticks_from_proc_stat(&text, cpus)
}

/// The kernel's clock ticks per second for `/proc/stat`.
pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "\
cpu  900 10 300 5000 40 0 20 7 0 0
cpu0 500 0 200 1000 30 0 10 5 0 0
cpu1 400 10 100 4000 10 0 10 2 0 0
intr 12345
ctxt 999
";

    #[test]
    fn cpu_lists_are_read_as_taskset_writes_them() {
        assert_eq!(parse_cpu_list("0").unwrap(), [0]);
        assert_eq!(parse_cpu_list("0-3").unwrap(), [0, 1, 2, 3]);
        assert_eq!(parse_cpu_list("8,0-1, 3").unwrap(), [0, 1, 3, 8]);
        assert_eq!(parse_cpu_list("2,2,1-2").unwrap(), [1, 2]);
        for bad in ["", "a", "3-1", "1-", "-1", "0,,1", "1000000"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn busy_counts_user_nice_system_irq_softirq_and_total_adds_idle_iowait_steal() {
        let one = ticks_from_proc_stat(STAT, &[0]).unwrap();
        assert_eq!(one.busy, 500 + 200 + 10);
        assert_eq!(one.total, 710 + 1000 + 30 + 5);
        let both = ticks_from_proc_stat(STAT, &[0, 1]).unwrap();
        assert_eq!(both.busy, 710 + 520);
        assert_eq!(both.total, 1745 + 520 + 4000 + 10 + 2);
        assert!(
            ticks_from_proc_stat(STAT, &[2]).is_err(),
            "a CPU the file does not list is an error, not zero"
        );
    }

    #[test]
    fn ticks_since_an_earlier_sample_are_the_difference() {
        let a = CpuTicks {
            busy: 10,
            total: 100,
        };
        let b = CpuTicks {
            busy: 70,
            total: 200,
        };
        assert_eq!(
            b.since(a),
            CpuTicks {
                busy: 60,
                total: 100
            }
        );
        assert_eq!(a.since(b), CpuTicks::default(), "never negative");
    }

    #[test]
    fn this_host_can_be_sampled() {
        let cpus = crate::runner::allowed_cpus();
        let t = sample(&cpus).unwrap();
        assert!(t.total >= t.busy && t.total > 0);
    }
}
