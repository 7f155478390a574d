//! Trust changes reach open connections: a registry of the connections
//! that presented a client certificate (and, in `optional` mode, of those
//! that did not), checked again once per change of client trust.
//!
//! A connection registers after its handshake (one short lock) and leaves
//! when it closes. Requests never touch the registry. When the acceptor
//! reports a reload that changed the client trust, [`watch`] compares the
//! new trust with the one each connection is known to verify under (its
//! handshake's, or that of the last check it passed) and checks again, on
//! a blocking thread, the chains that could have stopped verifying: every
//! chain when the
//! CRLs or the mode changed, else only those attributed to a removed CA
//! (adding a CA never invalidates a chain). A chain is verified once
//! however many connections presented it. Each connection that no longer
//! verifies is signalled and ends gracefully (GOAWAY for HTTP/2, closed
//! after the current request for HTTP/1). One audit event reports the
//! change and how many connections it ended.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use rustls_pki_types::CertificateDer;
use tls_reload::{
    ClientAuth, ClientTrust, Fingerprint, ReloadEvent, ReloadableAcceptor, TrustDiff,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Why the gateway ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Its client certificate no longer verifies under the new trust.
    TrustChanged,
    /// Its client certificate reached its notAfter.
    ClientCertExpired,
    /// It reached its (jittered) max age.
    MaxAge,
    /// The gateway drained.
    Shutdown,
}

impl Ended {
    /// In declaration order, so `reason as usize` indexes it.
    pub(crate) const ALL: [Ended; 4] = [
        Self::TrustChanged,
        Self::ClientCertExpired,
        Self::MaxAge,
        Self::Shutdown,
    ];

    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::TrustChanged => "trust_changed",
            Self::ClientCertExpired => "client_cert_expired",
            Self::MaxAge => "max_age",
            Self::Shutdown => "shutdown",
        }
    }
}

/// One registered connection.
struct Entry {
    /// The chain it presented; `None` for a client without a certificate
    /// (registered in `optional` mode only).
    chain: Option<Arc<[CertificateDer<'static>]>>,
    /// The trusted CA its chain was attributed to, under `valid_under`.
    ca: Option<Fingerprint>,
    /// A client trust its chain is known to verify under: the trust of
    /// its handshake, then the trust of each check it passed; `None`
    /// until its admission knows it (such a connection is always checked).
    /// A later trust is compared with this one, not with the trust the
    /// last check saw: reloads that come faster than the checks (A, then
    /// A+B, then A again) cannot hide a connection admitted in between.
    valid_under: Option<Arc<ClientTrust>>,
    /// Cancelled to end it.
    end: CancellationToken,
}

/// The open connections a change of client trust may have to end.
#[derive(Default)]
pub(crate) struct Connections {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Entry>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("open", &self.len())
            .finish()
    }
}

/// A connection's place in the registry; leaves it when dropped.
pub(crate) struct Registration {
    registry: Arc<Connections>,
    id: u64,
    end: CancellationToken,
}

impl Registration {
    /// Fires when a change of trust ends the connection.
    pub(crate) fn ended(&self) -> &CancellationToken {
        &self.end
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

/// A connection a check verifies again: its id, chain and end signal.
type Suspect = (
    u64,
    Option<Arc<[CertificateDer<'static>]>>,
    CancellationToken,
);

/// What one check of the open connections did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Recheck {
    /// Connections looked at.
    pub(crate) checked: u64,
    /// Distinct chains verified.
    pub(crate) verified: u64,
    /// Connections signalled to end.
    pub(crate) ended: u64,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connections registered now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Registers a connection that presented `chain` (attributed to the
    /// CA `ca`), or none, known to verify under `valid_under` (`None`:
    /// not known yet).
    pub(crate) fn register(
        self: &Arc<Self>,
        chain: Option<Arc<[CertificateDer<'static>]>>,
        ca: Option<Fingerprint>,
        valid_under: Option<Arc<ClientTrust>>,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let end = CancellationToken::new();
        self.lock().insert(
            id,
            Entry {
                chain,
                ca,
                valid_under,
                end: end.clone(),
            },
        );
        Registration {
            registry: self.clone(),
            id,
            end,
        }
    }

    /// Checks the registered connections against `trust` at `now`;
    /// signals each that no longer verifies. Each connection is compared
    /// with the trust it is known to verify under: only CAs added, or a
    /// CA removed that its chain does not end at, cannot make it fail, so
    /// it is not verified again. CPU-bound: call it on a blocking thread.
    pub(crate) fn recheck(&self, trust: &Arc<ClientTrust>, now: SystemTime) -> Recheck {
        let mut outcome = Recheck::default();
        // The few distinct trusts connections were admitted or last
        // checked under, each compared with `trust` once.
        let mut diffs: Vec<(Arc<ClientTrust>, TrustDiff)> = Vec::new();
        let mut crls_changed = false;
        let mut ids = Vec::new();
        let suspects: Vec<Suspect> = {
            let open = self.lock();
            let mut suspects = Vec::new();
            for (&id, e) in open.iter() {
                if e.end.is_cancelled() {
                    // Ending already.
                    continue;
                }
                ids.push(id);
                let suspect = match &e.valid_under {
                    None => true,
                    Some(valid_under) => {
                        let diff = match diffs.iter().position(|(t, _)| Arc::ptr_eq(t, valid_under))
                        {
                            Some(i) => &diffs[i].1,
                            None => {
                                diffs.push((valid_under.clone(), trust.diff(valid_under)));
                                &diffs[diffs.len() - 1].1
                            }
                        };
                        crls_changed |= diff.crls_changed;
                        diff.may_invalidate()
                            && (diff.crls_changed
                                || diff.mode_changed
                                || e.chain.is_none()
                                || e.ca.as_ref().is_none_or(|ca| {
                                    diff.removed.iter().any(|r| r.fingerprint_sha256 == *ca)
                                }))
                    }
                };
                if suspect {
                    suspects.push((id, e.chain.clone(), e.end.clone()));
                }
            }
            suspects
        };
        // Each distinct chain once, however many connections presented it.
        let mut index: HashMap<&[CertificateDer<'static>], usize> = HashMap::new();
        let mut distinct: Vec<&[CertificateDer<'static>]> = Vec::new();
        let slots: Vec<Option<usize>> = suspects
            .iter()
            .map(|(_, chain, _)| {
                chain.as_deref().map(|chain| {
                    *index.entry(chain).or_insert_with(|| {
                        distinct.push(chain);
                        distinct.len() - 1
                    })
                })
            })
            .collect();
        outcome.verified = distinct.len() as u64;
        outcome.checked = suspects.len() as u64;
        // Chains a new CRL lists are verified (and their connections
        // ended) first; the rest after, for what a listing does not show.
        let listed: Vec<bool> = distinct
            .iter()
            .map(|chain| crls_changed && trust.lists_as_revoked(chain))
            .collect();
        let mut valid = vec![true; distinct.len()];
        for pass in [true, false] {
            let batch: Vec<usize> = (0..distinct.len()).filter(|&i| listed[i] == pass).collect();
            let chains: Vec<_> = batch.iter().map(|&i| distinct[i]).collect();
            for (&i, ok) in batch
                .iter()
                .zip(verify_all(trust, &chains, now, CHAINS_PER_THREAD))
            {
                valid[i] = ok;
            }
            for ((_, _, end), slot) in suspects.iter().zip(&slots) {
                let ok = match *slot {
                    // Connections without a certificate, once.
                    None if pass => trust.mode() != ClientAuth::Required,
                    Some(i) if listed[i] == pass => valid[i],
                    _ => continue,
                };
                if !ok && !end.is_cancelled() {
                    end.cancel();
                    outcome.ended += 1;
                }
            }
        }
        // Every connection looked at and not ended now verifies under
        // `trust`: those verified again are attributed afresh (a chain may
        // end at another CA of the same key), the others keep their CA,
        // which `trust` still holds.
        let mut open = self.lock();
        let verified: HashMap<u64, Option<Fingerprint>> = suspects
            .iter()
            .filter(|(_, _, end)| !end.is_cancelled())
            .map(|(id, chain, _)| {
                let ca = chain
                    .as_deref()
                    .and_then(|c| trust.issuer_of(c))
                    .map(|ca| ca.cert().fingerprint_sha256.clone());
                (*id, ca)
            })
            .collect();
        for id in ids {
            let Some(entry) = open.get_mut(&id) else {
                continue;
            };
            if entry.end.is_cancelled() {
                continue;
            }
            // A suspect that did not pass was cancelled above.
            if let Some(ca) = verified.get(&id) {
                entry.ca = ca.clone();
            }
            entry.valid_under = Some(trust.clone());
        }
        outcome
    }

    /// Records that connection `id` verifies under `trust`, with its chain
    /// attributed to `ca`.
    fn passed(&self, id: u64, trust: Arc<ClientTrust>, ca: Option<Fingerprint>) {
        if let Some(entry) = self.lock().get_mut(&id) {
            entry.valid_under = Some(trust);
            entry.ca = ca;
        }
    }
}

/// Chains below this many are verified on the calling thread alone.
const CHAINS_PER_THREAD: usize = 256;

/// Whether each of `chains` verifies under `trust` at `now`, spread over
/// the machine's cores: a check over thousands of distinct chains (a new
/// CRL) is then done in a fraction of the time one core would take.
fn verify_all(
    trust: &ClientTrust,
    chains: &[&[CertificateDer<'static>]],
    now: SystemTime,
    chains_per_thread: usize,
) -> Vec<bool> {
    let verify = |part: &[&[CertificateDer<'static>]]| -> Vec<bool> {
        part.iter()
            .map(|chain| trust.verify(chain, now).is_ok())
            .collect()
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(chains.len().div_ceil(chains_per_thread.max(1)))
        .max(1);
    if threads == 1 {
        return verify(chains);
    }
    let per_thread = chains.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = chains
            .chunks(per_thread)
            .map(|part| (part.len(), scope.spawn(move || verify(part))))
            .collect();
        parts
            .into_iter()
            // A verifier that panicked proves nothing: keep the connections.
            .flat_map(|(n, part)| part.join().unwrap_or_else(|_| vec![true; n]))
            .collect()
    })
}

/// A change of client trust and what checking the open connections did,
/// for the audit.
#[derive(Debug)]
pub(crate) struct TrustChange {
    pub(crate) generation: u64,
    pub(crate) diff: TrustDiff,
    pub(crate) recheck: Recheck,
}

/// Follows the acceptor's reloads until `stop`: after each that changed
/// the client trust, checks the open connections again and sends the
/// outcome to `audit`.
pub(crate) async fn watch(
    acceptor: ReloadableAcceptor,
    mut events: tls_reload::Subscription,
    state: Arc<crate::state::State>,
    audit: mpsc::UnboundedSender<TrustChange>,
    stop: CancellationToken,
) {
    let Some(mut served) = acceptor.client_trust() else {
        return;
    };
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = events.recv() => event,
        };
        let generation = match event {
            Some(ReloadEvent::Reloaded(r)) if r.trust_changed => r.generation,
            Some(_) => continue,
            None => return,
        };
        let Some(trust) = acceptor.client_trust() else {
            continue;
        };
        if Arc::ptr_eq(&trust, &served) {
            // A later reload's trust, already checked.
            continue;
        }
        let diff = trust.diff(&served);
        let started = Instant::now();
        let recheck = {
            let (connections, trust) = (state.connections.clone(), trust.clone());
            tokio::task::spawn_blocking(move || connections.recheck(&trust, SystemTime::now()))
                .await
                .unwrap_or_default()
        };
        let took = started.elapsed();
        state.metrics.trust_rechecked(took);
        tracing::info!(
            generation,
            added = diff.added.len(),
            removed = diff.removed.len(),
            crls_changed = diff.crls_changed,
            checked = recheck.checked,
            verified = recheck.verified,
            ended = recheck.ended,
            took = ?took,
            "client trust changed: open connections checked again"
        );
        served = trust;
        let _ = audit.send(TrustChange {
            generation,
            diff,
            recheck,
        });
    }
}

/// Registers a connection that completed its handshake: a client with a
/// certificate always, one without only in `optional` mode. Counts the
/// handshake for the CA the chain ends at. `before` is the trust served
/// when the handshake started: if the trust changed since, the check of
/// the connections may have missed this one, so it is checked here.
/// Returns the registration and the attributed CA.
pub(crate) fn admit(
    acceptor: &ReloadableAcceptor,
    connections: &Arc<Connections>,
    before: Option<Arc<ClientTrust>>,
    chain: Option<&Arc<[CertificateDer<'static>]>>,
) -> (Option<Registration>, Option<Fingerprint>) {
    let Some(before) = before else {
        return (None, None);
    };
    if chain.is_none() && before.mode() != ClientAuth::Optional {
        return (None, None);
    }
    // Registered before the trust is read again, so that a check of the
    // connections that starts meanwhile sees it (and, not knowing yet
    // which trust it verifies under, checks it).
    let registration = connections.register(chain.cloned(), None, None);
    let fingerprint =
        |ca: Option<&tls_reload::TrustedCa>| ca.map(|ca| ca.cert().fingerprint_sha256.clone());
    let now = acceptor.client_trust().unwrap_or_else(|| before.clone());
    let ca = if Arc::ptr_eq(&now, &before) {
        // No trust was published since the handshake started: the
        // handshake verified the chain under `before`.
        fingerprint(chain.and_then(|c| before.record_handshake(c)))
    } else {
        let valid = match chain {
            Some(chain) => now.verify(chain, SystemTime::now()).is_ok(),
            None => now.mode() != ClientAuth::Required,
        };
        if !valid {
            registration.end.cancel();
            return (Some(registration), None);
        }
        fingerprint(chain.and_then(|c| now.record_handshake(c)))
    };
    connections.passed(registration.id, now, ca.clone());
    (Some(registration), ca)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tls_reload::testing::{SecretVolumes, TestCa};

    fn chain(leaf: &tls_reload::testing::Leaf) -> Arc<[CertificateDer<'static>]> {
        Arc::from(vec![leaf.cert_der.clone()])
    }

    /// Fresh volumes, and an acceptor over them requiring client
    /// certificates.
    fn mtls() -> (SecretVolumes, ReloadableAcceptor) {
        let volumes = SecretVolumes::new();
        let acceptor = ReloadableAcceptor::builder(volumes.mtls_files(ClientAuth::Required))
            .build()
            .unwrap();
        (volumes, acceptor)
    }

    /// Reloads `acceptor` now, as a trigger would.
    async fn reload(acceptor: &ReloadableAcceptor) {
        acceptor
            .reload_now(tls_reload::Trigger::Manual)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_trust_change_ends_exactly_the_connections_that_no_longer_verify() {
        let (volumes, acceptor) = mtls();
        let registry = Arc::new(Connections::default());
        let a = &volumes.client_ca;
        let b = TestCa::new("b");
        let (of_a, of_b) = (volumes.client.clone(), b.client("bob"));
        let before = acceptor.client_trust();
        let (reg_a, ca_a) = admit(&acceptor, &registry, before.clone(), Some(&chain(&of_a)));
        let reg_a = reg_a.unwrap();
        assert_eq!(ca_a, Some(Fingerprint::of(a.cert_der())));
        assert_eq!(registry.len(), 1);

        // A+B: nothing can fail, nothing is checked.
        volumes.publish_client_ca(format!("{}{}", a.cert_pem(), b.cert_pem()));
        reload(&acceptor).await;
        let both = acceptor.client_trust().unwrap();
        let outcome = registry.recheck(&both, SystemTime::now());
        assert_eq!(outcome, Recheck::default());
        let (reg_b, _) = admit(
            &acceptor,
            &registry,
            Some(both.clone()),
            Some(&chain(&of_b)),
        );
        let reg_b = reg_b.unwrap();

        // B only: A's connection ends, B's stays.
        volumes.publish_client_ca(b.cert_pem());
        reload(&acceptor).await;
        let only_b = acceptor.client_trust().unwrap();
        let outcome = registry.recheck(&only_b, SystemTime::now());
        assert_eq!(
            (outcome.checked, outcome.ended),
            (1, 1),
            "only A's is suspect"
        );
        assert!(reg_a.ended().is_cancelled());
        assert!(!reg_b.ended().is_cancelled());
        drop(reg_a);
        assert_eq!(registry.len(), 1);
        assert_eq!(only_b.cas()[0].handshakes(), 1, "B's handshake was counted");
    }

    #[tokio::test]
    async fn a_connection_admitted_across_a_swap_is_checked_against_the_new_trust() {
        let (volumes, acceptor) = mtls();
        let registry = Arc::new(Connections::default());
        let before = acceptor.client_trust();
        volumes.publish_client_ca(TestCa::new("other").cert_pem());
        reload(&acceptor).await;
        let (reg, _) = admit(&acceptor, &registry, before, Some(&chain(&volumes.client)));
        assert!(reg.unwrap().ended().is_cancelled());
    }

    #[tokio::test]
    async fn a_connection_admitted_under_a_trust_no_check_saw_is_checked_against_that_trust() {
        // A, then A+B (a client of B connects), then A again, faster than
        // the checks: the only check compares A with the connection's
        // A+B, not with the A it saw last, and ends it.
        let (volumes, acceptor) = mtls();
        let registry = Arc::new(Connections::default());
        let a = volumes.client_ca.cert_pem().to_owned();
        let b = TestCa::new("b");
        volumes.publish_client_ca(format!("{a}{}", b.cert_pem()));
        reload(&acceptor).await;
        let both = acceptor.client_trust();
        let (reg_b, ca_b) = admit(&acceptor, &registry, both, Some(&chain(&b.client("bob"))));
        let reg_b = reg_b.unwrap();
        assert_eq!(ca_b, Some(Fingerprint::of(b.cert_der())));
        let (reg_a, _) = admit(
            &acceptor,
            &registry,
            acceptor.client_trust(),
            Some(&chain(&volumes.client)),
        );
        let reg_a = reg_a.unwrap();
        volumes.publish_client_ca(&a);
        reload(&acceptor).await;
        let only_a = acceptor.client_trust().unwrap();
        let outcome = registry.recheck(&only_a, SystemTime::now());
        assert_eq!(
            (outcome.checked, outcome.ended),
            (1, 1),
            "B's, and only B's"
        );
        assert!(reg_b.ended().is_cancelled());
        assert!(!reg_a.ended().is_cancelled());
        // A's connection now counts as checked under A alone: the next
        // change compares with that.
        let again = registry.recheck(&only_a, SystemTime::now());
        assert_eq!(again, Recheck::default());
    }

    #[tokio::test]
    async fn a_connection_refused_at_admission_or_with_an_expired_certificate_serves_nothing() {
        let (volumes, acceptor) = mtls();
        let registry = Arc::new(Connections::default());
        let before = acceptor.client_trust();
        volumes.publish_client_ca(TestCa::new("other").cert_pem());
        reload(&acceptor).await;
        let (registration, _) = admit(&acceptor, &registry, before, Some(&chain(&volumes.client)));
        let refused = crate::accept::Lifetime::for_tests(registration, None).refused();
        assert_eq!(refused, Some(Ended::TrustChanged));
        let expired =
            crate::accept::Lifetime::for_tests(None, Some(std::time::Duration::ZERO)).refused();
        assert_eq!(expired, Some(Ended::ClientCertExpired));
        let fine =
            crate::accept::Lifetime::for_tests(None, Some(std::time::Duration::from_secs(1)))
                .refused();
        assert_eq!(fine, None);
    }

    /// `n` connections of distinct clients of the volumes' client CA
    /// (each chain registered twice when `shared`), then a CRL for that
    /// CA revoking one of them: the check of every connection that
    /// follows. Returns what it did and how long it took.
    async fn recheck_after_a_new_crl(
        n: usize,
        shared: bool,
    ) -> (Recheck, [std::time::Duration; 3]) {
        let volumes = SecretVolumes::new();
        let crl = volumes.client_crl_path();
        let files = volumes.mtls_files(ClientAuth::Required).crl(&crl);
        volumes.write_client_ca(&[]);
        let acceptor = ReloadableAcceptor::builder(files).build().unwrap();
        let registry = Arc::new(Connections::default());
        let key = rcgen::KeyPair::generate().unwrap();
        let leaves: Vec<_> = (0..n)
            .map(|i| {
                let options = tls_reload::testing::LeafOptions::client(&format!("client-{i}"));
                volumes.client_ca.issue_with_key(&options, &key)
            })
            .collect();
        let before = acceptor.client_trust().unwrap();
        let mut registrations = Vec::new();
        for leaf in &leaves {
            let chain = chain(leaf);
            for _ in 0..if shared { 2 } else { 1 } {
                registrations.push(registry.register(
                    Some(chain.clone()),
                    None,
                    Some(before.clone()),
                ));
            }
        }
        volumes.write_client_ca(&[&leaves[0]]);
        reload(&acceptor).await;
        let after = acceptor.client_trust().unwrap();
        let diff = after.diff(&before);
        assert!(diff.crls_changed);
        // How long until the revoked client's connection is signalled,
        // seen from another thread while the check runs.
        let revoked = registrations[0].ended().clone();
        let started = Instant::now();
        let (outcome, took, revoked_after) = std::thread::scope(|scope| {
            let watch = scope.spawn(|| {
                while !revoked.is_cancelled() {
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
                started.elapsed()
            });
            let outcome = registry.recheck(&after, SystemTime::now());
            let took = started.elapsed();
            (outcome, took, watch.join().unwrap())
        });
        // The same verifications on one thread.
        let chains: Vec<Arc<[CertificateDer<'static>]>> = leaves.iter().map(chain).collect();
        let refs: Vec<&[CertificateDer<'static>]> = chains.iter().map(|c| &c[..]).collect();
        let started = Instant::now();
        let one_thread = verify_all(&after, &refs, SystemTime::now(), usize::MAX);
        let one_thread_took = started.elapsed();
        assert_eq!(one_thread.iter().filter(|v| !**v).count(), 1);
        let ended: Vec<bool> = registrations
            .iter()
            .map(|r| r.ended().is_cancelled())
            .collect();
        let per_chain = if shared { 2 } else { 1 };
        assert!(
            ended[..per_chain].iter().all(|e| *e),
            "the revoked client's connections end"
        );
        assert!(
            ended[per_chain..].iter().all(|e| !e),
            "no other connection ends"
        );
        (outcome, [took, revoked_after, one_thread_took])
    }

    #[test]
    fn chains_spread_over_threads_keep_their_order() {
        let (volumes, acceptor) = mtls();
        let trust = acceptor.client_trust().unwrap();
        let stranger = TestCa::new("stranger");
        let leaves: Vec<_> = (0..9)
            .map(|i| match i % 3 {
                0 => stranger.client("x"),
                _ => volumes.client_ca.client("y"),
            })
            .collect();
        let chains: Vec<Arc<[CertificateDer<'static>]>> = leaves.iter().map(chain).collect();
        let refs: Vec<&[CertificateDer<'static>]> = chains.iter().map(|c| &c[..]).collect();
        let expected: Vec<bool> = (0..9).map(|i| i % 3 != 0).collect();
        for per_thread in [1, 2, 4, 100] {
            let found = verify_all(&trust, &refs, SystemTime::now(), per_thread);
            assert_eq!(found, expected, "{per_thread} per thread");
        }
    }

    #[tokio::test]
    async fn a_new_crl_ends_the_revoked_clients_connections_and_verifies_each_chain_once() {
        let (outcome, _) = recheck_after_a_new_crl(50, true).await;
        assert_eq!(
            outcome,
            Recheck {
                checked: 100,
                verified: 50,
                ended: 2
            }
        );
    }

    #[tokio::test]
    #[ignore = "measurement for BENCH.md: cargo test -p openshell-server --release --lib \
                recheck_cost -- --ignored --nocapture"]
    async fn recheck_cost_over_10000_connections() {
        let (outcome, [took, revoked_after, one_thread]) =
            recheck_after_a_new_crl(10_000, false).await;
        assert_eq!(outcome.checked, 10_000);
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        println!(
            "re-check of {} connections ({} distinct chains, {} ended) on {threads} threads: {:?}, \
             the revoked client's connection signalled after {:?}; on one thread: {:?} \
             ({:.1} µs per chain)",
            outcome.checked,
            outcome.verified,
            outcome.ended,
            took,
            revoked_after,
            one_thread,
            one_thread.as_secs_f64() * 1e6 / outcome.verified as f64
        );
        // Removing the CA all 10,000 chains end at: each fails at path
        // building, before any signature is checked.
        let (volumes, acceptor) = mtls();
        let before = acceptor.client_trust().unwrap();
        let registry = Arc::new(Connections::default());
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = Some(Fingerprint::of(volumes.client_ca.cert_der()));
        let registrations: Vec<Registration> = (0..10_000)
            .map(|i| {
                let options = tls_reload::testing::LeafOptions::client(&format!("client-{i}"));
                let leaf = volumes.client_ca.issue_with_key(&options, &key);
                registry.register(Some(chain(&leaf)), ca.clone(), Some(before.clone()))
            })
            .collect();
        volumes.publish_client_ca(TestCa::new("next").cert_pem());
        reload(&acceptor).await;
        let after = acceptor.client_trust().unwrap();
        let started = Instant::now();
        let outcome = registry.recheck(&after, SystemTime::now());
        let took = started.elapsed();
        assert_eq!(outcome.ended, 10_000);
        assert!(registrations.iter().all(|r| r.ended().is_cancelled()));
        println!("re-check after removing the CA of all 10000 connections: {took:?} (all ended)");
        // The per-handshake cost: attributing a chain to its CA.
        let (volumes, acceptor) = mtls();
        let trust = acceptor.client_trust().unwrap();
        let chain = [volumes.client.cert_der.clone()];
        let started = Instant::now();
        for _ in 0..10_000 {
            assert!(trust.record_handshake(&chain).is_some());
        }
        println!(
            "attribution per handshake: {:.2} µs",
            started.elapsed().as_secs_f64() * 1e6 / 10_000.0
        );
    }

    /// CRL files beside the client CA volume, for the tests.
    trait ClientCrl {
        fn client_crl_path(&self) -> std::path::PathBuf;
        /// Publishes the client CA with a CRL of it revoking `revoked`.
        fn write_client_ca(&self, revoked: &[&tls_reload::testing::Leaf]);
    }

    impl ClientCrl for SecretVolumes {
        fn client_crl_path(&self) -> std::path::PathBuf {
            self.client_ca_volume.path("ca.crl")
        }

        fn write_client_ca(&self, revoked: &[&tls_reload::testing::Leaf]) {
            let crl = self.client_ca.crl(revoked);
            self.client_ca_volume
                .write(&[
                    ("ca.crt", self.client_ca.cert_pem().as_bytes()),
                    ("ca.crl", crl.as_bytes()),
                ])
                .unwrap();
        }
    }
}
