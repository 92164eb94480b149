//! Agents the controller has heard from, keyed by (agent id, instance id),
//! with their last heartbeat and per-instance batch sequence state.
//!
//! Bounded: at most `max_instances` records; when full, the instance seen
//! least recently is forgotten (counted). Finding it is not a scan: every
//! instance holds its place in a recency index (`O(log n)` per touch and
//! per eviction, under the registry lock). A forgotten agent is told
//! `known_agent: false` on its next heartbeat and says hello again.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;
use tapio_wire::{DegradedReason, HeartbeatRequest, HelloRequest, InstanceStatus, ObserverStatus};

/// How many recently accepted sequence numbers each instance remembers for
/// duplicate detection.
const RECENT_SEQUENCES: usize = 1024;

#[derive(Debug, Default)]
pub struct SeqState {
    pub last: u64,
    pub batches: u64,
    pub gaps: u64,
    pub missing: u64,
    pub regressions: u64,
    pub duplicates: u64,
    recent: VecDeque<u64>,
    recent_set: HashSet<u64>,
}

/// What to do with an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchVerdict {
    /// New: store it.
    Accept,
    /// This (instance, sequence) was accepted before: acknowledge only.
    Duplicate,
}

/// What `SeqState::observe` changed, to take it back when the batch could
/// not be stored after all (the controller then answers 503 and the agent
/// resends the same sequence, which must be new again).
#[derive(Debug, Clone, Copy)]
pub struct SeqUndo {
    seq: u64,
    last: u64,
    batches: u64,
    gaps: u64,
    missing: u64,
    regressions: u64,
}

impl SeqState {
    /// The state `observe(seq)` is about to change.
    pub fn undo_point(&self, seq: u64) -> SeqUndo {
        SeqUndo {
            seq,
            last: self.last,
            batches: self.batches,
            gaps: self.gaps,
            missing: self.missing,
            regressions: self.regressions,
        }
    }

    /// Takes back an accepted `observe`.
    pub fn undo(&mut self, u: SeqUndo) {
        if self.recent.back() == Some(&u.seq) {
            self.recent.pop_back();
            self.recent_set.remove(&u.seq);
        }
        self.last = u.last;
        self.batches = u.batches;
        self.gaps = u.gaps;
        self.missing = u.missing;
        self.regressions = u.regressions;
    }

    /// Records an accepted batch's sequence and says whether it is new.
    pub fn observe(&mut self, seq: u64) -> BatchVerdict {
        if self.recent_set.contains(&seq) {
            self.duplicates += 1;
            return BatchVerdict::Duplicate;
        }
        if seq > self.last + 1 {
            self.gaps += 1;
            self.missing += seq - self.last - 1;
        } else if seq <= self.last {
            // Older than the newest, and not seen: late or out of order.
            self.regressions += 1;
            self.missing = self.missing.saturating_sub(1);
        }
        self.last = self.last.max(seq);
        self.batches += 1;
        self.recent.push_back(seq);
        self.recent_set.insert(seq);
        if self.recent.len() > RECENT_SEQUENCES {
            if let Some(old) = self.recent.pop_front() {
                self.recent_set.remove(&old);
            }
        }
        BatchVerdict::Accept
    }
}

#[derive(Debug)]
pub struct Instance {
    pub node_name: String,
    pub agent_version: String,
    pub kernel_release: String,
    pub first_hello: Option<Instant>,
    pub last_hello: Option<Instant>,
    pub last_heartbeat: Option<Instant>,
    pub last_seen: Instant,
    /// Its key in `Registry::recency`.
    touch: u64,
    pub config_version: String,
    pub applied_hash: String,
    pub uptime_secs: u64,
    pub counters: BTreeMap<String, u64>,
    pub observers: Vec<ObserverStatus>,
    pub degraded: Vec<DegradedReason>,
    pub seq: SeqState,
}

impl Instance {
    fn new(node_name: &str, now: Instant) -> Instance {
        Instance {
            node_name: node_name.to_string(),
            agent_version: String::new(),
            kernel_release: String::new(),
            first_hello: None,
            last_hello: None,
            last_heartbeat: None,
            last_seen: now,
            touch: 0,
            config_version: tapio_wire::UNCONFIGURED_VERSION.into(),
            applied_hash: String::new(),
            uptime_secs: 0,
            counters: BTreeMap::new(),
            observers: Vec::new(),
            degraded: Vec::new(),
            seq: SeqState::default(),
        }
    }
}

pub struct Registry {
    map: HashMap<(String, String), Instance>,
    /// instance id -> the agent id that first used it. An instance id is
    /// bound to its agent for as long as the instance is known, so no
    /// client can claim another agent's instance (and with it its event
    /// ids, which the export de-duplicates on).
    owners: HashMap<String, String>,
    /// Touch number -> instance key, oldest first.
    recency: BTreeMap<u64, (String, String)>,
    touches: u64,
    max_instances: usize,
    pub evicted: u64,
}

/// Makes `inst` (known under `key`) the instance seen most recently.
fn seen(
    recency: &mut BTreeMap<u64, (String, String)>,
    touches: &mut u64,
    inst: &mut Instance,
    key: (String, String),
    now: Instant,
) {
    *touches += 1;
    recency.remove(&inst.touch);
    recency.insert(*touches, key);
    inst.touch = *touches;
    inst.last_seen = now;
}

fn age(now: Instant, t: Option<Instant>) -> Option<u64> {
    t.map(|t| now.saturating_duration_since(t).as_secs())
}

impl Registry {
    pub fn new(max_instances: usize) -> Registry {
        Registry {
            map: HashMap::new(),
            owners: HashMap::new(),
            recency: BTreeMap::new(),
            touches: 0,
            max_instances: max_instances.max(1),
            evicted: 0,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    fn entry(&mut self, agent: &str, instance: &str, node: &str, now: Instant) -> &mut Instance {
        let key = (agent.to_string(), instance.to_string());
        if !self.map.contains_key(&key) && self.map.len() >= self.max_instances {
            if let Some((_, oldest)) = self.recency.pop_first() {
                self.map.remove(&oldest);
                self.owners.remove(&oldest.1);
                self.evicted += 1;
            }
        }
        self.owners
            .entry(instance.to_string())
            .or_insert_with(|| agent.to_string());
        let inst = self
            .map
            .entry(key.clone())
            .or_insert_with(|| Instance::new(node, now));
        seen(&mut self.recency, &mut self.touches, inst, key, now);
        inst.node_name = node.to_string();
        inst
    }

    /// Whether `instance` is free for `agent`: unknown, or already its own.
    pub fn owns(&self, agent: &str, instance: &str) -> bool {
        self.owners.get(instance).is_none_or(|a| a == agent)
    }

    pub fn hello(&mut self, h: &HelloRequest, now: Instant) {
        let inst = self.entry(&h.agent_id, &h.instance_id, &h.node_name, now);
        inst.first_hello.get_or_insert(now);
        inst.last_hello = Some(now);
        inst.agent_version = h.agent_version.clone();
        inst.kernel_release = h.kernel_release.clone();
    }

    /// Returns whether the instance was known (said hello to this
    /// controller process).
    pub fn heartbeat(&mut self, hb: &HeartbeatRequest, now: Instant) -> bool {
        let key = (hb.agent_id.clone(), hb.instance_id.clone());
        let Some(inst) = self.map.get_mut(&key) else {
            return false;
        };
        seen(&mut self.recency, &mut self.touches, inst, key, now);
        let known = inst.first_hello.is_some();
        inst.last_heartbeat = Some(now);
        inst.config_version = hb.config_version.clone();
        inst.applied_hash = hb.config_hash.clone();
        inst.uptime_secs = hb.uptime_secs;
        inst.counters = hb.counters.clone();
        inst.observers = hb.observers.clone();
        inst.degraded = hb.degraded_reasons.clone();
        known
    }

    /// Sequence bookkeeping for an accepted batch. Creates the instance if
    /// it has not said hello (its events are still evidence); the second
    /// value says whether it had.
    pub fn batch(
        &mut self,
        agent: &str,
        instance: &str,
        node: &str,
        seq: u64,
        now: Instant,
    ) -> (BatchVerdict, bool, SeqUndo) {
        let inst = self.entry(agent, instance, node, now);
        let undo = inst.seq.undo_point(seq);
        (inst.seq.observe(seq), inst.first_hello.is_some(), undo)
    }

    /// Takes back an accepted batch's sequence (it could not be stored).
    pub fn undo_batch(&mut self, agent: &str, instance: &str, undo: SeqUndo) {
        if let Some(inst) = self.map.get_mut(&(agent.to_string(), instance.to_string())) {
            inst.seq.undo(undo);
        }
    }

    /// (instances known, of which stale: not seen for `stale_after_secs`).
    pub fn counts(&self, now: Instant, stale_after_secs: u64) -> (u64, u64) {
        let stale = self
            .map
            .values()
            .filter(|i| now.saturating_duration_since(i.last_seen).as_secs() >= stale_after_secs)
            .count();
        (self.map.len() as u64, stale as u64)
    }

    /// Per-agent status, sorted by agent id then instance id.
    /// Every agent, by agent id (tests).
    #[cfg(test)]
    pub fn status(&self, now: Instant) -> Vec<tapio_wire::AgentStatus> {
        self.status_page(now, None, usize::MAX).0
    }

    /// At most `limit` agents whose id sorts after `after`, by agent id,
    /// and the `after` of the next page when there are more.
    pub fn status_page(
        &self,
        now: Instant,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<tapio_wire::AgentStatus>, Option<String>) {
        let mut by_agent: BTreeMap<&str, Vec<(&str, &Instance)>> = BTreeMap::new();
        for ((agent, inst_id), inst) in &self.map {
            if after.is_some_and(|a| agent.as_str() <= a) {
                continue;
            }
            by_agent.entry(agent).or_default().push((inst_id, inst));
        }
        let next = (by_agent.len() > limit)
            .then(|| {
                by_agent
                    .keys()
                    .nth(limit.saturating_sub(1))
                    .map(|a| a.to_string())
            })
            .flatten();
        let page = by_agent
            .into_iter()
            .take(limit)
            .map(|(agent, mut list)| {
                list.sort_by_key(|(id, _)| *id);
                let node_name = list
                    .iter()
                    .max_by_key(|(_, i)| i.last_seen)
                    .map(|(_, i)| i.node_name.clone())
                    .unwrap_or_default();
                tapio_wire::AgentStatus {
                    agent_id: agent.to_string(),
                    node_name,
                    instances: list
                        .into_iter()
                        .map(|(id, i)| InstanceStatus {
                            instance_id: id.to_string(),
                            agent_version: i.agent_version.clone(),
                            kernel_release: i.kernel_release.clone(),
                            first_hello_age_secs: age(now, i.first_hello),
                            last_hello_age_secs: age(now, i.last_hello),
                            last_heartbeat_age_secs: age(now, i.last_heartbeat),
                            config_version: i.config_version.clone(),
                            applied_config_hash: i.applied_hash.clone(),
                            uptime_secs: i.uptime_secs,
                            counters: i.counters.clone(),
                            observers: i.observers.clone(),
                            degraded_reasons: i.degraded.clone(),
                            last_sequence: i.seq.last,
                            batches: i.seq.batches,
                            sequence_gaps: i.seq.gaps,
                            missing_batches: i.seq.missing,
                            sequence_regressions: i.seq.regressions,
                            duplicate_batches: i.seq.duplicates,
                        })
                        .collect(),
                }
            })
            .collect();
        (page, next)
    }

    /// Instances known.
    pub fn instances(&self) -> u64 {
        self.map.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_count_gaps_regressions_and_duplicates() {
        let mut s = SeqState::default();
        assert_eq!(s.observe(1), BatchVerdict::Accept);
        assert_eq!(s.observe(2), BatchVerdict::Accept);
        assert_eq!(s.observe(2), BatchVerdict::Duplicate);
        assert_eq!(s.observe(5), BatchVerdict::Accept);
        assert_eq!((s.gaps, s.missing), (1, 2));
        assert_eq!(s.observe(3), BatchVerdict::Accept);
        assert_eq!((s.regressions, s.missing, s.last), (1, 1, 5));
        assert_eq!(s.observe(3), BatchVerdict::Duplicate);
        assert_eq!((s.batches, s.duplicates), (4, 2));
    }

    #[test]
    fn first_batch_after_a_restart_is_a_gap_from_this_view() {
        let mut s = SeqState::default();
        s.observe(10);
        assert_eq!((s.gaps, s.missing, s.last), (1, 9, 10));
    }

    fn hello_request(agent: &str, instance: &str) -> HelloRequest {
        HelloRequest {
            wire_version: tapio_wire::WIRE_VERSION.into(),
            agent_id: agent.into(),
            node_name: "n".into(),
            instance_id: instance.into(),
            agent_version: "v".into(),
            kernel_release: "k".into(),
            arch: "x".into(),
            capabilities: vec![],
        }
    }

    #[test]
    fn bounded_by_least_recently_seen() {
        let mut r = Registry::new(2);
        let t = Instant::now();
        let h = hello_request;
        r.hello(&h("a", "1"), t);
        r.hello(&h("b", "1"), t + std::time::Duration::from_secs(1));
        r.hello(&h("c", "1"), t + std::time::Duration::from_secs(2));
        assert_eq!((r.len(), r.evicted), (2, 1));
        let ids: Vec<String> = r.status(t).into_iter().map(|a| a.agent_id).collect();
        assert_eq!(ids, ["b", "c"]);
        // a heartbeat makes b the most recent: d evicts c, not b
        let hb = HeartbeatRequest {
            wire_version: tapio_wire::WIRE_VERSION.into(),
            agent_id: "b".into(),
            instance_id: "1".into(),
            node_name: "n".into(),
            config_version: "1".into(),
            config_hash: String::new(),
            uptime_secs: 1,
            counters: BTreeMap::new(),
            observers: vec![],
            degraded_reasons: vec![],
        };
        assert!(r.heartbeat(&hb, t + std::time::Duration::from_secs(3)));
        r.hello(&h("d", "1"), t + std::time::Duration::from_secs(4));
        let ids: Vec<String> = r.status(t).into_iter().map(|a| a.agent_id).collect();
        assert_eq!(ids, ["b", "d"]);
        assert_eq!((r.len(), r.evicted, r.recency.len()), (2, 2, 2));
    }

    #[test]
    fn status_pages_by_agent_id() {
        let mut r = Registry::new(100);
        let t = Instant::now();
        for a in ["d", "a", "c", "b", "e"] {
            r.hello(&hello_request(a, &format!("i-{a}")), t);
        }
        let ids = |p: &[tapio_wire::AgentStatus]| -> Vec<String> {
            p.iter().map(|a| a.agent_id.clone()).collect()
        };
        let (p1, next) = r.status_page(t, None, 2);
        assert_eq!(
            (ids(&p1), next.as_deref()),
            (vec!["a".into(), "b".into()], Some("b"))
        );
        let (p2, next) = r.status_page(t, next.as_deref(), 2);
        assert_eq!(
            (ids(&p2), next.as_deref()),
            (vec!["c".into(), "d".into()], Some("d"))
        );
        let (p3, next) = r.status_page(t, next.as_deref(), 2);
        assert_eq!((ids(&p3), next), (vec!["e".to_string()], None));
        let (all, next) = r.status_page(t, None, 5);
        assert_eq!((all.len(), next), (5, None));
    }
}
