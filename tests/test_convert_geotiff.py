"""GeoTIFF chips -> one NetCDF field (data_generation.convert_geotiff), on small GeoTIFFs written with rasterio:
values, nodata and clouds, pixel-centre coordinates, the CRS read back, dates from HLS names, the reference's
merged chips (3 dates x 6 bands, date-major), and the refusals."""
import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_origin

from data_generation import convert_geotiff
from gapfill.data import open_field
from gapfill.errors import DataError

TRANSFORM = from_origin(500000.0, 4100000.0, 30.0, 30.0)      # UTM 17N, 30 m pixels, north up


def write_tif(path, values, crs="EPSG:32617", transform=TRANSFORM, nodata=None):
    b, h, w = values.shape
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=b, dtype=values.dtype, crs=crs,
                       transform=transform, nodata=nodata) as f:
        f.write(values)


@pytest.fixture
def series(tmp_path):
    """4 HLS-named dates x 6 bands of 16 x 20 DN (int16), one nodata cell per date, a cloud in dates 1 and 3."""
    rng = np.random.default_rng(0)
    dn = (rng.uniform(0.02, 0.4, (4, 6, 16, 20)) * 1e4).astype(np.int16)
    dn[:, :, 0, 0] = -9999
    (tmp_path / "tifs").mkdir()
    (tmp_path / "clouds").mkdir()
    for i, day in enumerate(("2020001", "2020017", "2020033", "2020049")):
        write_tif(tmp_path / "tifs" / f"HLS.S30.T17SLB.{day}T160000.v2.0.tif", dn[i], nodata=-9999)
        cloud = np.zeros((1, 16, 20), np.uint8)
        if i in (1, 3):
            cloud[0, 4:8, 10:15] = 1
        write_tif(tmp_path / "clouds" / f"cloud_{i}.tif", cloud)
    return tmp_path, dn


def test_a_series_keeps_values_clouds_coordinates_crs_and_dates(series):
    tmp, dn = series
    out = tmp / "site.nc"
    convert_geotiff.main(["--dataroot", str(tmp / "tifs"), "--out", str(out), "--cloud_masks", str(tmp / "clouds")])
    ds = xr.open_dataset(out, decode_coords="all")
    assert list(ds.data_vars) == ["B02", "B03", "B04", "B05", "B07", "B08"]
    want = dn.astype(np.float64) * 1e-4
    want[:, :, 0, 0] = np.nan                                            # nodata
    want[[1, 3], :, 4:8, 10:15] = np.nan                                 # clouds are never observed
    got = np.stack([ds[b].values for b in ds.data_vars], axis=1)        # (T, B, Y, X)
    np.testing.assert_allclose(got, want.astype(np.float32), equal_nan=True)
    np.testing.assert_allclose(ds["x"].values, 500000.0 + 30.0 * (np.arange(20) + 0.5))   # pixel centres
    np.testing.assert_allclose(ds["y"].values, 4100000.0 - 30.0 * (np.arange(16) + 0.5))
    assert ds["x"].attrs["units"] == "m" and ds.rio.crs.to_epsg() == 32617
    assert tuple(ds.rio.transform())[:6] == tuple(TRANSFORM)[:6]
    assert [str(t)[:10] for t in ds["time"].values] == ["2020-01-01", "2020-01-17", "2020-02-02", "2020-02-18"]
    field = open_field(out)                                              # what every method reads
    assert field.shape == (4, 6, 16, 20) and field.bands[2] == "B04" and field.time_days[1] - field.time_days[0] == 16


def test_the_reference_merged_chip_is_three_dates_of_six_bands(tmp_path):
    dn = np.arange(18 * 8 * 8, dtype=np.int16).reshape(18, 8, 8)
    write_tif(tmp_path / "chip_001_merged.tif", dn)
    out = tmp_path / "chip.nc"
    convert_geotiff.main(["--dataroot", str(tmp_path / "chip_001_merged.tif"), "--dates_per_file", "3", "--out",
                          str(out), "--dates", "2020-03-01", "2020-06-15", "2020-09-20"])
    ds = xr.open_dataset(out)
    np.testing.assert_allclose(ds["B04"].values[1], dn[1 * 6 + 2] * 1e-4, rtol=1e-6)   # date 2, third band
    assert ds.sizes["time"] == 3 and str(ds["time"].values[2])[:10] == "2020-09-20"


def test_refusals(tmp_path):
    write_tif(tmp_path / "a_20200101.tif", np.zeros((6, 8, 8), np.int16))
    write_tif(tmp_path / "b_20200201.tif", np.zeros((6, 8, 8), np.int16), transform=from_origin(0, 0, 30, 30))
    with pytest.raises(DataError, match="not on the grid"):
        convert_geotiff.convert(convert_geotiff.tif_files(tmp_path))
    with pytest.raises(DataError, match="do not split into --dates_per_file 4"):
        convert_geotiff.convert([tmp_path / "a_20200101.tif"], dates_per_file=4)
    assert convert_geotiff.file_date("x_2021-07-04_y.tif") == np.datetime64("2021-07-04")
    assert convert_geotiff.file_date("HLS.L30.T10SEG.2021185T183919") == np.datetime64("2021-07-04")
    assert convert_geotiff.file_date("chip_001_merged.tif") is None
