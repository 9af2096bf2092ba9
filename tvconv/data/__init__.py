"""Data for the face and fundus tasks: embedded synthetic sets, real-format loaders, augmentation
and the layout-awareness diagnostic."""
