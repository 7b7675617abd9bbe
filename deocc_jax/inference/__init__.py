"""Inference on face images: align -> (segment) -> complete -> embed -> score -> decide.

:class:`FaceRecognizer` freezes one trained recogniser of a run with the
run's generator ``G`` and occlusion segmenter, the resolution ``R`` and crop
layout the models were trained on, and the cosine-similarity threshold the
evaluation job calibrated (``<workdir>/results/calibration.json``)::

  fr = FaceRecognizer.from_run(workdir, recognizer="student_soft")  # config: WORKDIR/config.json
  v = fr.verify("a.png", "b.png", mask_b="b_mask.png")   # v.score, v.same
  fr.embed_folder("gallery/", "gallery.npz")
  fr.identify(["probe.png"], "gallery.npz", top_k=5)

Images: a file path or an (H, W, 3) / (H, W) / (H, W, 4) uint8 array (alpha
dropped). Alignment (``align``):

* ``'none'``: the image is already an aligned face crop like the training
  faces: it must be square; it is resized to R x R (bilinear, box
  pre-filter when shrinking more than 2x: ``alignment.warp_affine_pil``).
  The default when no landmarks are given.
* ``'landmarks'``: the (5, 2) landmarks given (x, y pixels, CelebA order:
  left eye, right eye, nose, left mouth, right mouth;
  ``alignment.CANONICAL_ORDER``) are mapped by a least-squares similarity onto
  the template -- the training crop's mean landmarks at R x R
  (``Models.mean_landmarks``). The default when landmarks are given.
* ``'dlib'``: dlib's detector finds the landmarks (the largest face when
  there are several); :class:`NoFaceError` names the file when none is found.
* ``'mtcnn'``: the same with MTCNN (``deocc_jax.detection.mtcnn``, Flax, on
  the facenet-pytorch wheel's weights), which finds masked faces that dlib's
  HOG detector misses (``benchmarks/results/masked_real_photos.md``).

A landmarks file (``read_landmarks_file``; set ``FaceRecognizer.landmarks_table``
or ``--landmarks`` in the CLI) gives the 5 landmarks of listed image files;
those images are aligned by them (``'landmarks'``) whatever ``align`` says.

Masks (the occluded pixels, when the user knows them): a path or an array,
grayscale, RGB (mean of the channels) or with an alpha channel (the alpha is
the mask); occluded where > 0.5 (> 127 for uint8 data, ``True`` for bool). A
mask has the image's *original* size and goes through the same alignment
warp as the face (bilinear, then > 0.5).

Completion (``input_kind``, which also picks the calibrated threshold):

* ``'completed_predicted'`` (default when the run has G and a segmenter):
  each face is completed by G with its given mask, else with the mask the
  segmenter predicts (blind de-occlusion; a clean face gets a (nearly)
  empty mask and comes back (nearly) unchanged).
* ``'completed'`` (default with G but no segmenter): faces with a given mask
  are completed with it; faces without one are embedded as they are.
* ``'masked'`` / ``'clean'`` (default without G): faces are embedded as they
  are; given masks are reported but not used.

Scores are cosine similarities in float64; ``same = score >= threshold``.
The calibration is the evaluation's "mixture, one face masked" protocol
(clean face vs occluded face), the use case of verification against an
enrolled clean face. ``threshold=`` overrides it.

Errors name the file at fault: ``FileNotFoundError`` (missing file),
``DatasetFormatError`` (a ``ValueError``: undecodable file), ``ValueError``
(non-square image with ``align='none'``, mask / image size mismatch, bad
landmarks), :class:`ImageTooLargeError` (a ``DatasetFormatError``: a file
over :data:`MAX_IMAGE_PIXELS` = 40 megapixels, checked from its header before
decoding, so decompression bombs cost nothing), :class:`NoFaceError` (a
``ValueError``), :class:`ImageErrors` (a ``ValueError`` listing every unusable
file of a folder). Inference runs in one process (the models' mesh spans its
local devices; ``deocc_jax.utils.batch_map`` runs the batches).

Input checks (shared with serving, ``deocc_jax.utils.face_warp``): a face
needs at least 8 pixels between its eye centres (``0.15 R`` for models under
54 px); an image without landmarks (``align='none'``) must be square, at
least R x R and not blank. ``locate`` (:func:`locate`, :func:`locate_all`)
reads, detects and checks before any model loads.

Modules: ``recognizer`` (:class:`FaceRecognizer`), ``locate`` (reading,
detection and the checks), ``images`` (reading
images and masks, size checks, folders), ``input_files`` (landmarks and
pairs files), ``gallery`` (:class:`Gallery`, :class:`Match`), ``results``
(:class:`Face`, :class:`Prepared`, :class:`Verification`, :class:`PairScore`)
and ``calibration`` (the thresholds of a run); this package exposes their
public API.
"""

from deocc_jax.data.dataset_formats import IMAGE_EXTENSIONS
from deocc_jax.inference.calibration import calibration_path, read_calibration
from deocc_jax.inference.gallery import Gallery, Match
from deocc_jax.inference.images import (
    MAX_IMAGE_PIXELS,
    ImageErrors,
    ImageTooLargeError,
    NoFaceError,
    check_image_size,
    list_images,
)
from deocc_jax.inference.input_files import (
    Pair,
    lookup_landmarks,
    read_landmarks_file,
    read_pairs_file,
)
from deocc_jax.inference.locate import (
    ALIGN_MODES,
    WAYS_OUT,
    DetectedFace,
    Located,
    detect_faces,
    locate,
    locate_all,
)
from deocc_jax.inference.recognizer import INPUT_KINDS, FaceRecognizer
from deocc_jax.inference.results import Face, PairScore, Prepared, Verification

__all__ = [
    "FaceRecognizer",
    "Face",
    "Prepared",
    "Verification",
    "Match",
    "Gallery",
    "NoFaceError",
    "ImageErrors",
    "ImageTooLargeError",
    "MAX_IMAGE_PIXELS",
    "check_image_size",
    "IMAGE_EXTENSIONS",
    "INPUT_KINDS",
    "ALIGN_MODES",
    "calibration_path",
    "read_calibration",
    "read_landmarks_file",
    "lookup_landmarks",
    "Pair",
    "PairScore",
    "read_pairs_file",
    "list_images",
    "WAYS_OUT",
    "DetectedFace",
    "Located",
    "detect_faces",
    "locate",
    "locate_all",
]
