"""Phase 2: the student (activity sinogram → image) with crosswise teacher-feature injection."""
