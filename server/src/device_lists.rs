//! Users' device lists, cached for the send writer.
//!
//! Every send is checked against the device lists of its sender and recipient. Reading
//! them from PostgreSQL for every batch took about a fifth of the writer's time, and the
//! writer's time is what a send waits for (docs/benchmarks.md). Device lists change
//! rarely (a device registered, its identity keys published, a device removed), so they
//! are kept here and forgotten:
//!
//! - at once in this process, by the handler that changed them, before it answers;
//! - in the other processes, by the fabric's `DevicesChanged` signal, and entirely
//!   whenever signals may have been missed;
//! - after [`TTL`] at the latest, whatever happened to the signals.
//!
//! A stale list cannot refuse a good send or store a bad one: a send the cached list
//! refuses is checked again against the database before it is refused, and a device
//! removed meanwhile is caught when the send locks its recipients' rows. What a stale
//! list can do is what a racing read always could: accept a send made just before a new
//! device became reachable without an envelope for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use courier_protocol::UserId;

use crate::db::messages::UserDevices;

/// Longest time a cached list is used.
pub const TTL: Duration = Duration::from_secs(5);

/// Most users cached; past this the cache starts again empty (a bound on memory, far
/// above what one writer touches in [`TTL`]).
const MAX_USERS: usize = 100_000;

#[derive(Debug, Default)]
struct Inner {
    /// Changes on every forget, so a list read before a change is not cached after it.
    epoch: u64,
    users: HashMap<UserId, (Instant, Arc<UserDevices>)>,
}

/// The cache; shared by the writer, the handlers that change devices and the fabric.
#[derive(Debug, Default)]
pub struct DeviceLists {
    inner: Mutex<Inner>,
}

impl DeviceLists {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the map consistent, so a poisoned lock is usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The fresh cached lists of `users`, the users not cached, and the epoch to hand
    /// to [`DeviceLists::store`] with what is read for them.
    pub fn lookup(
        &self,
        users: impl IntoIterator<Item = UserId>,
    ) -> (HashMap<UserId, Arc<UserDevices>>, Vec<UserId>, u64) {
        let inner = self.lock();
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        for user in users {
            match inner.users.get(&user) {
                Some((at, devices)) if at.elapsed() < TTL => {
                    found.insert(user, devices.clone());
                }
                _ => missing.push(user),
            }
        }
        (found, missing, inner.epoch)
    }

    /// Caches lists read from the database, unless a list was forgotten since `epoch`
    /// (the read may predate that change). Users that do not exist are not cached: a
    /// send to them is refused anyway, and they may register at any moment.
    pub fn store(&self, epoch: u64, read_at: Instant, lists: &HashMap<UserId, Arc<UserDevices>>) {
        let mut inner = self.lock();
        if inner.epoch != epoch {
            return;
        }
        if inner.users.len() + lists.len() > MAX_USERS {
            inner.users.clear();
        }
        for (user, devices) in lists {
            if devices.exists {
                inner.users.insert(*user, (read_at, devices.clone()));
            }
        }
    }

    /// Forgets a user's list (its devices changed).
    pub fn forget(&self, user: UserId) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.users.remove(&user);
    }

    /// Forgets every list (changes may have been missed).
    pub fn forget_all(&self) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.users.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn user(n: u128) -> UserId {
        UserId::from(Uuid::from_u128(n))
    }

    fn lists(users: &[UserId], exists: bool) -> HashMap<UserId, Arc<UserDevices>> {
        users
            .iter()
            .map(|u| {
                (
                    *u,
                    Arc::new(UserDevices {
                        exists,
                        devices: Vec::new(),
                    }),
                )
            })
            .collect()
    }

    #[test]
    fn a_stored_list_is_found_until_forgotten() {
        let cache = DeviceLists::default();
        let (_, missing, epoch) = cache.lookup([user(1), user(2)]);
        assert_eq!(missing, vec![user(1), user(2)]);
        cache.store(epoch, Instant::now(), &lists(&[user(1), user(2)], true));
        let (found, missing, _) = cache.lookup([user(1), user(2)]);
        assert_eq!(found.len(), 2);
        assert!(missing.is_empty());
        cache.forget(user(1));
        let (found, missing, _) = cache.lookup([user(1), user(2)]);
        assert!(found.contains_key(&user(2)));
        assert_eq!(missing, vec![user(1)]);
        cache.forget_all();
        let (found, _, _) = cache.lookup([user(2)]);
        assert!(found.is_empty());
    }

    #[test]
    fn a_list_read_before_a_change_is_not_cached_after_it() {
        let cache = DeviceLists::default();
        let (_, _, epoch) = cache.lookup([user(1)]);
        // The read happens, then the user's devices change before it is stored.
        cache.forget(user(1));
        cache.store(epoch, Instant::now(), &lists(&[user(1)], true));
        let (found, missing, _) = cache.lookup([user(1)]);
        assert!(found.is_empty());
        assert_eq!(missing, vec![user(1)]);
    }

    #[test]
    fn expired_lists_and_unknown_users_are_read_again() {
        let cache = DeviceLists::default();
        let (_, _, epoch) = cache.lookup([user(1), user(2)]);
        let long_ago = Instant::now()
            .checked_sub(TTL + Duration::from_secs(1))
            .unwrap_or_else(Instant::now);
        cache.store(epoch, long_ago, &lists(&[user(1)], true));
        cache.store(epoch, Instant::now(), &lists(&[user(2)], false));
        let (found, missing, _) = cache.lookup([user(1), user(2)]);
        assert!(found.is_empty());
        assert_eq!(missing, vec![user(1), user(2)]);
    }
}
