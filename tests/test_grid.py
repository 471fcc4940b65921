import numpy as np
import pytest

from redsift.grid import LogGrid, air_to_vacuum, pixel_edges, vacuum_to_air


def test_quasarnet_grid_is_the_published_one():
    g = LogGrid.quasarnet()
    assert g.npix == 443 and g.reference == "left"
    # wave[i] = 10**(log10(3600) + 1e-3 i); last pixel 9961 A (QuasarNP)
    assert g.wave[0] == pytest.approx(3600.0)
    assert g.wave[-1] == pytest.approx(10 ** (np.log10(3600) + 0.442), rel=1e-12)
    assert round(g.wave[-1]) == 9961
    # left-edge grid: the reference wavelengths are the first npix edges
    np.testing.assert_allclose(g.edges[:-1], g.wave, rtol=1e-13)


def test_quasarnet_grid_matches_reference_wave(qn_reference):
    np.testing.assert_allclose(LogGrid.quasarnet().wave, qn_reference["wave"], rtol=1e-12)


def test_boss_grid_and_roundtrip_dict():
    g = LogGrid.boss()
    assert 3599 < g.wave[0] < 3601 and 10390 < g.wave[-1] < 10410
    assert LogGrid.from_dict(g.to_dict()) == g
    assert "boss" in g.describe()


def test_centre_grid_edges_straddle_centres():
    g = LogGrid.from_range(4000, 5000, 1e-4)
    assert np.all(g.edges[:-1] < g.wave) and np.all(g.wave < g.edges[1:])
    np.testing.assert_allclose(np.log10(g.centers), g.loglam, atol=1e-12)


def test_bad_grid_parameters():
    with pytest.raises(ValueError, match="npix"):
        LogGrid(3.5, 1e-4, 0)
    with pytest.raises(ValueError, match="reference"):
        LogGrid(3.5, 1e-4, 10, reference="middle")


def test_air_to_vacuum_known_lines():
    # H-alpha 6562.80 A air is 6564.61 A vacuum; [OIII] 5006.84 air is 5008.24 vacuum
    np.testing.assert_allclose(air_to_vacuum([6562.80, 5006.84]), [6564.61, 5008.24], atol=0.01)
    w = np.linspace(3000, 11000, 50)
    np.testing.assert_allclose(vacuum_to_air(air_to_vacuum(w)), w, atol=1e-6)
    assert air_to_vacuum([1215.67])[0] == 1215.67  # UV is vacuum by convention


def test_pixel_edges_1d_and_2d():
    w = np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(pixel_edges(w), [0.5, 1.5, 3.0, 5.0])
    np.testing.assert_allclose(pixel_edges(np.vstack([w, w + 1])), [[0.5, 1.5, 3.0, 5.0], [1.5, 2.5, 4.0, 6.0]])
