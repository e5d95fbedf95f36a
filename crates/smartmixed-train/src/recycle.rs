//! Buffers handed from one training step to the next: the dense op's copies of its inputs,
//! pre-activations and saved derivatives are the same sizes every step, and allocating
//! them afresh cost a step ~10% in zeroing and page faults (measured). A buffer taken
//! here holds stale values: callers overwrite every element before reading.

use std::sync::Mutex;

/// Buffers kept at most; more are freed (a step of the deepest network uses fewer).
const KEEP: usize = 64;

static FREE: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// A buffer of `len` values, reused when one large enough is free (the smallest such),
/// else new. Its contents are unspecified: overwrite all of it before reading.
pub fn take(len: usize) -> Vec<f32> {
    let reused = {
        let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        best.map(|i| free.swap_remove(i))
    };
    match reused {
        Some(mut v) => {
            if v.len() >= len {
                v.truncate(len);
            } else {
                v.resize(len, 0.0);
            }
            v
        }
        None => vec![0.0; len],
    }
}

/// Returns a buffer for a later [`take`].
pub fn give(v: Vec<f32>) {
    if v.capacity() == 0 {
        return;
    }
    let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
    if free.len() < KEEP {
        free.push(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_with_the_length_asked_for() {
        give(vec![1.0; 100]);
        let v = take(40);
        assert_eq!(v.len(), 40);
        give(v);
        let w = take(150);
        assert_eq!(w.len(), 150);
        assert!(w[100..].iter().all(|&x| x == 0.0), "grown part is zero");
        give(w);
    }
}
