//! Lowering a thread's CPU priority, for batch work that must yield to real-time serving.

/// Nice value of batch threads: when real-time threads (nice 0) want the CPU, these get a small
/// share of it; when nothing else runs they get all of it.
pub const BATCH_NICE: i32 = 10;

/// Lower the calling thread's CPU priority to [`BATCH_NICE`] (Linux; elsewhere a no-op).
pub fn lower_current_thread() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), BATCH_NICE) {
            tracing::debug!(error = %e, "cannot lower a batch thread's priority");
        }
    }
}
