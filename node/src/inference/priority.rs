//! Lowering a thread's CPU priority, for batch work that must yield to real-time serving.
//!
//! Linux: `SCHED_IDLE`, the policy for work that should run only when nothing else wants the
//! CPU: a waking real-time thread preempts it at once (a lower nice value alone did not: under
//! load the scheduler still let batch threads finish their slice first, and real-time p99 rose
//! several-fold). Elsewhere a no-op.

/// Lower the calling thread's CPU priority to `SCHED_IDLE` (Linux).
pub fn lower_current_thread() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadPriority,
            ThreadSchedulePolicy,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
            tracing::debug!(error = ?e, "cannot lower a batch thread's priority");
        }
    }
}
