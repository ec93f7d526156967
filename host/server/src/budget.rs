//! A global budget for the bytes of request bodies in flight.
//!
//! Every body is read against the budget before it is buffered: a body with a `Content-Length`
//! reserves its whole declared size up front; a chunked body reserves as its bytes arrive. When
//! the budget cannot cover a body the request is answered `503 overloaded` with `Retry-After`
//! (the caller may retry; nothing was read into memory). The reservation is held until the
//! handler finishes (decode + apply), then released by dropping the [`BodyPermit`].
//!
//! Reservations are counted in KiB (rounded up) so that one request can reserve more than the
//! `u32::MAX` permits a semaphore hands out at once.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const UNIT: usize = 1024;

fn units(bytes: usize) -> usize {
    bytes.div_ceil(UNIT)
}

#[derive(Clone)]
pub struct InflightBudget {
    semaphore: Arc<Semaphore>,
    total_bytes: usize,
}

/// Bytes reserved for one request; released on drop.
pub struct BodyPermit {
    permit: Option<OwnedSemaphorePermit>,
    reserved_units: usize,
}

impl InflightBudget {
    pub fn new(total_bytes: usize) -> Self {
        let total_units = units(total_bytes).min(Semaphore::MAX_PERMITS);
        InflightBudget {
            semaphore: Arc::new(Semaphore::new(total_units)),
            total_bytes,
        }
    }

    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Bytes not reserved by any request right now.
    pub fn available_bytes(&self) -> usize {
        self.semaphore.available_permits().saturating_mul(UNIT)
    }

    /// An empty reservation to grow with [`BodyPermit::grow_to`].
    pub fn empty(&self) -> BodyPermit {
        BodyPermit {
            permit: None,
            reserved_units: 0,
        }
    }

    /// Grows `permit` so that it covers `bytes`; `false` when the budget cannot cover them now
    /// (what `permit` already holds stays reserved until it is dropped).
    pub fn grow_to(&self, permit: &mut BodyPermit, bytes: usize) -> bool {
        let wanted = units(bytes);
        let mut missing = wanted.saturating_sub(permit.reserved_units);
        while missing > 0 {
            let step = missing.min(u32::MAX as usize);
            // `step` fits in u32 by construction.
            let Ok(extra) = self.semaphore.clone().try_acquire_many_owned(step as u32) else {
                return false;
            };
            match permit.permit.as_mut() {
                Some(held) => held.merge(extra),
                None => permit.permit = Some(extra),
            }
            permit.reserved_units += step;
            missing -= step;
        }
        true
    }
}

#[cfg(test)]
impl BodyPermit {
    pub fn reserved_bytes(&self) -> usize {
        self.reserved_units.saturating_mul(UNIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_and_released_on_drop() {
        let budget = InflightBudget::new(10 * 1024);
        let mut a = budget.empty();
        assert!(budget.grow_to(&mut a, 6 * 1024));
        let mut b = budget.empty();
        assert!(!budget.grow_to(&mut b, 5 * 1024), "6 + 5 KiB exceed 10 KiB");
        assert_eq!(b.reserved_bytes(), 0, "a refused reservation holds nothing");
        assert!(budget.grow_to(&mut b, 1));
        assert!(budget.grow_to(&mut b, 4 * 1024), "growing in steps");
        assert_eq!(budget.available_bytes(), 0);
        drop(a);
        assert_eq!(budget.available_bytes(), 6 * 1024);
        drop(b);
        assert_eq!(budget.available_bytes(), 10 * 1024);
    }

    #[test]
    fn growing_to_a_smaller_size_keeps_the_reservation() {
        let budget = InflightBudget::new(4096);
        let mut a = budget.empty();
        assert!(budget.grow_to(&mut a, 3000));
        assert!(budget.grow_to(&mut a, 10));
        assert_eq!(a.reserved_bytes(), 3072);
    }
}
