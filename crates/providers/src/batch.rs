//! Ed25519 verification in batches, for MailPace under load.
//!
//! Verifying a batch costs about half as much per signature as verifying
//! one by one (15 µs against 30 µs here; docs/performance.md). One thread
//! takes every verification queued at that moment (up to [`MAX_BATCH`]),
//! checks them as one batch and, only if the batch fails, checks each one
//! alone, so one bad signature never changes another request's answer.
//! With a single request in flight this is plain verification.
//!
//! A batch passes only if every signature in it is valid for its message and
//! key (cofactored equation, deterministic randomness from the transcript).
//! It may accept a signature that single verification rejects only by a
//! small-order component added to a valid signature of the same message:
//! malleability, not forgery. Weak keys are refused when configured.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, mpsc};

use bytes::Bytes;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use tokio::sync::oneshot;

/// Most signatures verified in one batch.
pub const MAX_BATCH: usize = 64;

/// A source's keys, and which one verified last (tried first, and used in
/// the batch: during a rotation the new key wins once and stays first).
#[derive(Debug)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
    preferred: AtomicUsize,
}

impl KeySet {
    pub fn new(keys: Vec<VerifyingKey>) -> Self {
        Self { keys, preferred: AtomicUsize::new(0) }
    }

    fn preferred(&self) -> usize {
        self.preferred.load(Ordering::Relaxed).min(self.keys.len().saturating_sub(1))
    }

    /// Single verification, preferred key first.
    pub fn verify_one(&self, message: &[u8], signature: &Signature) -> bool {
        let first = self.preferred();
        let order = std::iter::once(first).chain((0..self.keys.len()).filter(|&i| i != first));
        for i in order {
            if self.keys.get(i).is_some_and(|key| key.verify(message, signature).is_ok()) {
                self.preferred.store(i, Ordering::Relaxed);
                return true;
            }
        }
        false
    }
}

struct Job {
    message: Bytes,
    signature: Signature,
    keys: Arc<KeySet>,
    reply: oneshot::Sender<bool>,
}

fn queue() -> &'static mpsc::Sender<Job> {
    static QUEUE: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("hookbridge-ed25519".into())
            .spawn(move || run(&rx))
            .expect("start the ed25519 verification thread");
        tx
    })
}

fn run(rx: &mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let results = verify_all(&jobs);
        for (job, ok) in jobs.drain(..).zip(results) {
            let _ = job.reply.send(ok);
        }
    }
}

fn verify_all(jobs: &[Job]) -> Vec<bool> {
    if jobs.len() > 1 && jobs.iter().all(|j| !j.keys.keys.is_empty()) {
        let messages: Vec<&[u8]> = jobs.iter().map(|j| j.message.as_ref()).collect();
        let signatures: Vec<Signature> = jobs.iter().map(|j| j.signature).collect();
        let keys: Vec<VerifyingKey> = jobs.iter().map(|j| j.keys.keys[j.keys.preferred()]).collect();
        if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
            return vec![true; jobs.len()];
        }
    }
    jobs.iter().map(|j| j.keys.verify_one(&j.message, &j.signature)).collect()
}

/// Whether `signature` over `message` verifies with any key of `keys`,
/// batched with the verifications in flight at the same time.
pub async fn verify(keys: Arc<KeySet>, message: Bytes, signature: Signature) -> bool {
    let (reply, answer) = oneshot::channel();
    let job = Job { message, signature, keys, reply };
    match queue().send(job) {
        // The thread lives for the whole process; an answer always comes.
        Ok(()) => answer.await.unwrap_or(false),
        Err(mpsc::SendError(job)) => job.keys.verify_one(&job.message, &job.signature),
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_verifications_each_get_their_own_answer() {
        let old = SigningKey::from_bytes(&[1; 32]);
        let new = SigningKey::from_bytes(&[2; 32]);
        let stranger = SigningKey::from_bytes(&[3; 32]);
        let keys = Arc::new(KeySet::new(vec![old.verifying_key(), new.verifying_key()]));
        let mut tasks = Vec::new();
        for i in 0..400u32 {
            let message = Bytes::from(format!("message {i}"));
            // Mostly valid (by either key), some signed by a stranger, some for another message.
            let (signature, valid) = match i % 7 {
                0 => (stranger.sign(&message), false),
                1 => (new.sign(b"another message"), false),
                2 | 3 => (old.sign(&message), true),
                _ => (new.sign(&message), true),
            };
            let keys = keys.clone();
            tasks.push(tokio::spawn(async move { (verify(keys, message, signature).await, valid, i) }));
        }
        for task in tasks {
            let (got, want, i) = task.await.unwrap();
            assert_eq!(got, want, "message {i}");
        }
    }
}
