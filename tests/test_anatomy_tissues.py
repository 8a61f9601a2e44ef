"""Tissue maps from label map files through data/label_tables.toml, and from ultrasound."""

import numpy as np
import pytest

from planner.anatomy import (
    body_mask_from_tissue,
    check_trajectory,
    get_label_table,
    label_names_from_header,
    load_label_tables,
    tissue_for_ultrasound,
    tissue_from_label_file,
    tissue_from_label_map,
)
from planner.anatomy.tissues import LabelTable
from planner.errors import InputError
from planner.imaging.formats import write_volume
from planner.labels import Tissue
from planner.volume import Volume, affine_from_geometry

from geometry import rotation


OBLIQUE = affine_from_geometry((0.8, 0.7, 1.2), (-40.0, 12.0, 55.0), rotation(25, -15, 35))

SHAPE = (20, 24, 28)  # (k, j, i)
BODY = (slice(3, 17), slice(4, 20), slice(4, 24))
RIB = (slice(6, 10), slice(8, 11), slice(6, 20))
AORTA = (slice(10, 14), slice(12, 16), slice(12, 16))


def ct_phantom(affine=OBLIQUE):
    """Air around a block of soft tissue (40 HU): tissue_from_ct gives skin over soft tissue."""
    hu = np.full(SHAPE, -1000, dtype=np.int16)
    hu[BODY] = 40
    return Volume(hu, affine, modality="CT", units="HU", metadata={"source": "ct phantom"})


def totalsegmentator_labels(affine=OBLIQUE):
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[RIB] = 110  # rib_right_7 in TotalSegmentator v2 "total"
    labels[AORTA] = 52  # aorta
    return Volume(labels, affine, modality="SEG", units="label", metadata={"source": "ts labels"})


# ---------------------------------------------------------------------------- tables
def test_the_data_file_holds_the_three_documented_tables():
    tables = load_label_tables()
    assert {"cryoplan", "generic", "totalsegmentator-like"} <= set(tables)
    assert all(isinstance(t, LabelTable) and t.description and t.source for t in tables.values())


def test_the_cryoplan_table_maps_every_tissue_value_to_itself():
    table = get_label_table("cryoplan")
    for tissue in Tissue:
        assert table.classify(int(tissue)) == tissue.key
    assert table.classify(int(max(Tissue)) + 1) is None


def test_totalsegmentator_classes_map_to_the_tissue_a_probe_must_respect():
    table = get_label_table("totalsegmentator-like")
    assert len([v for v in table.values if v > 0]) == 117
    by_name = {name: tissue for name, tissue in table.values.values()}
    assert all(by_name[f"rib_{side}_{n}"] == "bone" for side in ("left", "right") for n in range(1, 13))
    assert all(by_name[f"vertebrae_{level}"] == "bone" for level in ("C1", "T7", "L5", "S1"))
    assert {by_name[n] for n in ("aorta", "inferior_vena_cava", "subclavian_artery_left")} == {"vessel"}
    assert {by_name[n] for n in ("lung_upper_lobe_left", "lung_lower_lobe_right")} == {"lung"}
    assert by_name["spinal_cord"] == "nerve"
    assert by_name["liver"] == "soft_tissue"
    assert table.classify(0) == "unlabelled"


def test_generic_name_rules_pick_the_first_matching_pattern():
    table = get_label_table("generic")
    assert table.classify(7, "Rib Left-7") == "bone"
    assert table.classify(3, "intervertebral_disc_L4") == "soft_tissue"  # not "*vertebra*"
    assert table.classify(3, "lung_vessels") == "vessel"  # not "*lung*"
    assert table.classify(4, "Greater occipital nerve") == "nerve"
    assert table.classify(9, "tumour") == "soft_tissue"  # the fallback
    assert table.classify(0) == "unlabelled"


def test_a_broken_table_file_is_reported_field_by_field(tmp_path):
    path = tmp_path / "tables.toml"
    path.write_text(
        '[tables.bad]\ndescription = "x"\nsource = "y"\n'
        '[tables.bad.values]\n1 = { name = "a", tissue = "plasma" }\nx = { name = "b", tissue = "bone" }\n'
    )
    with pytest.raises(InputError) as error:
        load_label_tables(path)
    message = str(error.value)
    assert "tables.bad.values.1.tissue" in message and "plasma" in message
    assert "tables.bad.values.x" in message


def test_an_unknown_table_name_lists_the_known_ones():
    with pytest.raises(InputError, match="totalsegmentator-like"):
        get_label_table("nope")


# ---------------------------------------------------------------------------- label files
def test_a_cryoplan_label_file_round_trips_on_an_oblique_grid(tmp_path):
    values = np.random.default_rng(3).integers(0, len(Tissue), size=SHAPE).astype(np.uint8)
    path = write_volume(Volume(values, OBLIQUE, modality="SEG", units="label"), tmp_path / "labels.nrrd")
    tissue = tissue_from_label_file(path)
    np.testing.assert_array_equal(tissue.array, values)
    np.testing.assert_allclose(tissue.affine, OBLIQUE, atol=1e-9)
    assert tissue.array.dtype == np.uint8 and tissue.modality == "SEG"
    assert tissue.metadata["label_table"] == "cryoplan"


def test_values_missing_from_the_table_are_listed_in_the_error(tmp_path):
    values = np.zeros(SHAPE, dtype=np.uint8)
    values[2, 2, 2], values[3, 3, 3] = 42, 9
    path = write_volume(Volume(values, OBLIQUE, modality="SEG"), tmp_path / "odd.nii.gz")
    with pytest.raises(InputError) as error:
        tissue_from_label_file(path)
    message = str(error.value)
    assert "odd.nii.gz" in message and "9, 42" in message and "cryoplan" in message


def test_a_float_image_with_fractions_is_not_a_label_map():
    image = Volume(np.full(SHAPE, 0.5, dtype=np.float32), OBLIQUE)
    with pytest.raises(InputError, match="non-integer"):
        tissue_from_label_map(image)


def test_integral_floats_are_accepted_as_labels():
    values = np.zeros(SHAPE, dtype=np.float32)
    values[RIB] = 4.0
    tissue = tissue_from_label_map(Volume(values, OBLIQUE))
    assert np.all(tissue.array[RIB] == Tissue.BONE) and tissue.array.dtype == np.uint8


def test_totalsegmentator_background_needs_a_base():
    with pytest.raises(InputError, match="base="):
        tissue_from_label_map(totalsegmentator_labels(), "totalsegmentator-like")


def test_totalsegmentator_structures_over_the_ct_classes():
    tissue = tissue_from_label_map(totalsegmentator_labels(), "totalsegmentator-like", base=ct_phantom())
    a = tissue.array
    assert np.all(a[RIB] == Tissue.BONE)
    assert np.all(a[AORTA] == Tissue.VESSEL)
    body = np.zeros(SHAPE, bool)
    body[BODY] = True
    assert np.all(a[~body] == Tissue.AIR)
    rest = body.copy()
    rest[RIB] = rest[AORTA] = False
    # The unsegmented body comes from HU: a skin shell over soft tissue.
    assert set(np.unique(a[rest])) == {Tissue.SKIN, Tissue.SOFT_TISSUE}
    np.testing.assert_array_equal(body_mask_from_tissue(tissue), body)


def test_a_label_map_on_another_grid_is_resampled_onto_the_base():
    # Labels on a grid twice as coarse with the same axes, its first voxel centre half a
    # fine voxel in, so that each coarse voxel holds exactly fine voxels 2n and 2n + 1.
    coarse = OBLIQUE.copy()
    coarse[:3, :3] *= 2.0
    coarse[:3, 3] += OBLIQUE[:3, :3] @ np.array([0.5, 0.5, 0.5])
    labels = np.zeros((10, 12, 14), dtype=np.uint8)
    labels[4:6, 5:8, 6:8] = 52  # aorta: CT voxels 8-11 along k, 10-15 along j, 12-15 along i
    tissue = tissue_from_label_map(
        Volume(labels, coarse, modality="SEG"), "totalsegmentator-like", base=ct_phantom()
    )
    assert tissue.array.shape == SHAPE
    np.testing.assert_allclose(tissue.affine, OBLIQUE)
    vessel = np.argwhere(tissue.array == Tissue.VESSEL)
    assert vessel.min(axis=0).tolist() == [8, 10, 12] and vessel.max(axis=0).tolist() == [11, 15, 15]
    assert len(vessel) == 4 * 6 * 4


def test_segment_names_in_a_slicer_style_nrrd_header_choose_the_classes(tmp_path):
    import SimpleITK as sitk

    values = np.zeros(SHAPE, dtype=np.uint8)
    values[RIB] = 1
    values[AORTA] = 2
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.8, 0.7, 1.2))
    image.SetOrigin(tuple(OBLIQUE[:3, 3]))
    image.SetDirection(tuple((OBLIQUE[:3, :3] / np.array([0.8, 0.7, 1.2])).ravel()))
    for index, (name, value) in enumerate([("Rib 7 right", 1), ("Descending aorta", 2)]):
        image.SetMetaData(f"Segment{index}_Name", name)
        image.SetMetaData(f"Segment{index}_LabelValue", str(value))
    path = tmp_path / "case.seg.nrrd"
    sitk.WriteImage(image, str(path))

    from planner.imaging import read_volume

    assert label_names_from_header(read_volume(path)) == {1: "Rib 7 right", 2: "Descending aorta"}
    tissue = tissue_from_label_file(path, base=ct_phantom())
    assert tissue.metadata["label_table"] == "generic"
    assert np.all(tissue.array[RIB] == Tissue.BONE) and np.all(tissue.array[AORTA] == Tissue.VESSEL)
    # Names given by the caller win over the header's.
    tissue = tissue_from_label_file(path, base=ct_phantom(), label_names={1: "fat pad", 2: "muscle"})
    assert np.all(tissue.array[RIB] == Tissue.FAT) and np.all(tissue.array[AORTA] == Tissue.MUSCLE)


# ---------------------------------------------------------------------------- ultrasound
def ultrasound_frame(*, rows=200, columns=120, pixel_mm=0.15, metadata=None):
    affine = affine_from_geometry((pixel_mm, pixel_mm, pixel_mm), (3.0, -2.0, 7.0), rotation(10, 80, -20))
    image = np.random.default_rng(1).integers(0, 255, size=(1, rows, columns)).astype(np.uint8)
    return Volume(image, affine, modality="US", metadata=dict(metadata or {}, source="us frame"))


def test_ultrasound_is_skin_at_the_face_then_soft_tissue():
    labels = tissue_for_ultrasound(ultrasound_frame())
    assert labels.array.shape == (1, 200, 120)
    rows = labels.array[0, :, 0]
    # 1.5 mm of 0.15 mm rows: row centres at 0.075 ... 1.425 mm are skin, 10 rows.
    assert np.all(rows[:10] == Tissue.SKIN) and np.all(rows[10:] == Tissue.SOFT_TISSUE)
    assert np.all(labels.array == labels.array[:, :, :1])  # every column alike


def test_ultrasound_face_row_from_the_calibrated_region_and_the_option():
    frame = ultrasound_frame(metadata={"ultrasound_region": {"x0": 0, "y0": 20, "x1": 119, "y1": 199}})
    rows = tissue_for_ultrasound(frame, skin_thickness_mm=0.3).array[0, :, 5]
    assert np.all(rows[:20] == Tissue.AIR) and np.all(rows[20:22] == Tissue.SKIN) and rows[22] == Tissue.SOFT_TISSUE
    rows = tissue_for_ultrasound(frame, face_row=4, tissue=Tissue.MUSCLE).array[0, :, 5]
    assert np.all(rows[:4] == Tissue.AIR) and rows[4] == Tissue.SKIN and rows[-1] == Tissue.MUSCLE
    with pytest.raises(InputError, match="face_row"):
        tissue_for_ultrasound(frame, face_row=500)


def test_a_cine_loop_gives_one_frame_of_labels():
    frame = ultrasound_frame()
    cine = Volume(np.repeat(frame.array, 5, axis=0), frame.affine, modality="US",
                  frame_times=np.arange(5) * 0.04)
    labels = tissue_for_ultrasound(cine)
    assert labels.array.shape == (1, 200, 120) and not labels.is_cine


def test_an_entry_on_the_transducer_face_is_on_the_skin():
    frame = ultrasound_frame()
    labels = tissue_for_ultrasound(frame)
    # The face is the top edge of row 0: half a pixel above the first row of centres.
    entry = frame.index_to_world([60.0, -0.5, 0.0])
    tip = frame.index_to_world([60.0, 120.0, 0.0])
    assert [w.code for w in check_trajectory(tip, entry, labels, probe_diameter_mm=0.41)] == []
    lifted = frame.index_to_world([60.0, -0.5 - 4.0 / 0.15, 0.0])  # 4 mm up, outside the image
    codes = [w.code for w in check_trajectory(tip, lifted, labels, probe_diameter_mm=0.41)]
    assert codes == ["entry_outside_volume"]
