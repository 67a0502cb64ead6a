//! Input side: finding images, decoding, Pillow-exact resizing, normalisation.
