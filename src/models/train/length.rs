//! How long a classifier trains by default: the reference's 3 epochs, or more epochs on a small
//! set, so that every default run takes at least [`MIN_STEPS`] optimiser steps.

/// The reference's number of epochs, the default for Fashion-MNIST- and CIFAR-sized sets (60,000
/// and 50,000 train images: 469 and 391 steps per epoch at batch 128, 1,407 and 1,173 steps in 3
/// epochs).
pub const REFERENCE_EPOCHS: usize = 3;

/// The fewest optimiser steps a run with the default number of epochs takes: 100.
///
/// Three epochs of a small set are too few steps to learn anything: the set of 450 photos
/// of 3 garments (4 steps per epoch at batch 128) was at chance after 3 epochs (12 steps) and at
/// 98.3% test accuracy after 20 (80 steps); 100 steps (25 epochs there) leave a margin. It is far
/// below the 1,173 and 1,407 steps of 3 epochs of CIFAR and Fashion-MNIST, whose default stays 3
/// epochs; and it keeps a small set's default run short (100 steps of a batch of 128 at width 4:
/// under a minute on 2 CPU cores).
pub const MIN_STEPS: usize = 100;

/// The default number of epochs for `train_images` images in batches of `batch_size`:
/// `max(REFERENCE_EPOCHS, ceil(MIN_STEPS / steps_per_epoch))` with
/// `steps_per_epoch = ceil(train_images / batch_size)`. 3 for Fashion-MNIST and CIFAR at batch
/// 128, 25 for 450 images.
pub fn default_epochs(train_images: usize, batch_size: usize) -> usize {
    let steps_per_epoch = train_images.div_ceil(batch_size.max(1)).max(1);
    REFERENCE_EPOCHS.max(MIN_STEPS.div_ceil(steps_per_epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_sized_sets_keep_three_epochs_and_small_sets_get_min_steps() {
        // The demo (Fashion-MNIST) and CIFAR at batch 128.
        assert_eq!(default_epochs(60_000, 128), 3);
        assert_eq!(default_epochs(50_000, 128), 3);
        // The set: 450 images, 4 steps per epoch.
        assert_eq!(default_epochs(450, 128), 25);
        for images in [1, 100, 450, 1_000, 4_000, 5_000, 12_800, 60_000] {
            for batch in [1, 32, 128, 1_000] {
                let epochs = default_epochs(images, batch);
                let steps = images.div_ceil(batch);
                assert!(epochs >= REFERENCE_EPOCHS);
                assert!(
                    epochs * steps >= MIN_STEPS,
                    "{images} images, batch {batch}"
                );
                // No more epochs than needed for MIN_STEPS.
                if epochs > REFERENCE_EPOCHS {
                    assert!((epochs - 1) * steps < MIN_STEPS);
                }
            }
        }
    }
}
