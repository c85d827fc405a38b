""".cppipe reading: Resize factors (additional images, chains, numeric X/Y) and disabled modules."""
from __future__ import annotations

import pytest

from gpuillum.cli import build_parser
from gpuillum.cli.options import method_from_args
from gpuillum.errors import UserError
from gpuillum.methods import get_method
from gpuillum.methods.cellprofiler import CalculateSettings
from gpuillum.methods.cellprofiler.cppipe import read_pipeline

HEAD = "CellProfiler Pipeline: http://www.cellprofiler.org\nVersion:5\nDateRevision:424\nModuleCount:9\n\n"
LOAD = (
    "LoadData:[module_num:1|svn_version:'Unknown'|variable_revision_number:6|enabled:True]\n"
    "    Input data file location:Default Input Folder|\n    Name of the file:load_data.csv\n\n"
)


def resize(number, source, output, x="0.2", y="0.2", additional=(), enabled=True):
    """A revision 5 Resize module with CellProfiler's full settings layout."""
    pairs = "".join(f"    Select the additional image?:{a}\n    Name the output image:{b}\n" for a, b in additional)
    return (
        f"Resize:[module_num:{number}|svn_version:'Unknown'|variable_revision_number:5|enabled:{enabled}]\n"
        f"    Select the input image:{source}\n    Name the output image:{output}\n"
        "    Resizing method:Resize by a fraction or multiple of the original size\n"
        f"    X Resizing factor:{x}\n    Y Resizing factor:{y}\n    Z Resizing factor:1.0\n"
        "    Width (x) of the final image:100\n    Height (y) of the final image:100\n"
        "    # of planes (z) in the final image:10\n    Interpolation method:Bilinear\n"
        "    Method to specify the dimensions:Manual\n    Select the image with the desired dimensions:None\n"
        f"    Additional image count:{len(additional)}\n{pairs}\n"
    )


def calculate(number, source, output, smoothing="Median Filter", aggregation="All: Across cycles", enabled=True):
    """A revision 2 CorrectIlluminationCalculate module."""
    values = [
        ("Select the input image", source), ("Name the output image", output),
        ("Select how the illumination function is calculated", "Regular"),
        ("Dilate objects in the final averaged image?", "No"), ("Dilation radius", "1"), ("Block size", "60"),
        ("Rescale the illumination function?", "Yes"),
        ("Calculate function for each image individually, or based on all images?", aggregation.replace(":", "\\x3A")),
        ("Smoothing method", smoothing), ("Method to calculate smoothing filter size", "Manually"),
        ("Approximate object diameter", "10"), ("Smoothing filter size", "20"),
        ("Retain the averaged image?", "No"), ("Name the averaged image", f"{output}Avg"),
        ("Retain the dilated image?", "No"), ("Name the dilated image", f"{output}Dilated"),
        ("Automatically calculate spline parameters?", "Yes"), ("Background mode", "auto"),
        ("Number of spline points", "5"), ("Background threshold", "2"), ("Image resampling factor", "2"),
        ("Maximum number of iterations", "40"), ("Residual value for convergence", "0.001"),
    ]
    lines = "".join(f"    {text}:{value}\n" for text, value in values)
    return f"CorrectIlluminationCalculate:[module_num:{number}|svn_version:'Unknown'|variable_revision_number:2|enabled:{enabled}]\n{lines}\n"


def pipeline(tmp_path, *modules, name="p.cppipe"):
    path = tmp_path / name
    path.write_text(HEAD + LOAD + "".join(modules))
    return path


# ---------------------------------------------------------------------------------------------- Resize


@pytest.mark.parametrize("source", ["SmallDNA", "SmallER", "SmallMito"])
def test_every_output_of_a_resize_has_its_factor(tmp_path, source):
    additional = [("OrigER", "SmallER"), ("OrigMito", "SmallMito")]
    path = pipeline(tmp_path, resize(2, "OrigDNA", "SmallDNA", "0.25", "0.25", additional), calculate(3, source, "Illum"))
    assert CalculateSettings.from_cppipe(path).resize_factor == 0.25


def test_an_image_not_made_by_the_resize_keeps_factor_1(tmp_path):
    path = pipeline(tmp_path, resize(2, "OrigDNA", "SmallDNA", additional=[("OrigER", "SmallER")]), calculate(3, "OrigER", "Illum"))
    assert CalculateSettings.from_cppipe(path).resize_factor == 1.0


def test_x_and_y_factors_are_compared_as_numbers(tmp_path):
    path = pipeline(tmp_path, resize(2, "OrigDNA", "SmallDNA", "0.2", "0.20"), calculate(3, "SmallDNA", "Illum"))
    assert CalculateSettings.from_cppipe(path).resize_factor == 0.2
    path = pipeline(tmp_path, resize(2, "OrigDNA", "SmallDNA", "0.2", "0.25"), calculate(3, "SmallDNA", "Illum"), name="b.cppipe")
    with pytest.raises(ValueError, match=r"Resize module #2: different X and Y factors \[0.2, 0.25\]"):
        CalculateSettings.from_cppipe(path)


@pytest.mark.parametrize("bad", ["abc", "nan", ""])
def test_a_factor_that_is_not_a_number_is_named(tmp_path, bad):
    path = pipeline(tmp_path, resize(2, "OrigDNA", "SmallDNA", "0.2", bad), calculate(3, "SmallDNA", "Illum"))
    with pytest.raises(ValueError, match=rf"^\S+p\.cppipe: module #3: input 'SmallDNA' comes from Resize module #2: "
                                         rf"'Y Resizing factor' expected a number, got '{bad}'$"):
        CalculateSettings.from_cppipe(path)


def test_a_chain_of_resizes_is_refused(tmp_path):
    first = resize(2, "OrigDNA", "HalfDNA", "0.5", "0.5", [("OrigER", "HalfER")])
    path = pipeline(tmp_path, first, resize(3, "HalfER", "QuarterER", "0.5", "0.5"), calculate(4, "QuarterER", "Illum"))
    with pytest.raises(ValueError, match=r"input 'QuarterER' comes from Resize module #3, fed by Resize module #2; only a single"):
        CalculateSettings.from_cppipe(path)
    # the additional output's own input is what counts: OrigMito is not resized upstream
    second = resize(3, "HalfDNA", "QuarterDNA", "0.5", "0.5", [("OrigMito", "HalfMito")])
    path = pipeline(tmp_path, first, second, calculate(4, "HalfMito", "Illum"), name="b.cppipe")
    assert CalculateSettings.from_cppipe(path).resize_factor == 0.5


def test_a_disabled_resize_makes_no_image(tmp_path):
    path = pipeline(tmp_path, resize(2, "OrigDNA", "SmallDNA", enabled=False), calculate(3, "SmallDNA", "Illum"))
    with pytest.raises(ValueError, match=r"module #3: input 'SmallDNA' is made only by Resize module #2, which is disabled"):
        CalculateSettings.from_cppipe(path)
    # a disabled alternative next to an enabled one: the enabled module's factor applies
    modules = resize(2, "OrigDNA", "SmallDNA", "0.5", "0.5"), resize(3, "OrigDNA", "SmallDNA", enabled=False)
    path = pipeline(tmp_path, *modules, calculate(4, "SmallDNA", "Illum"), name="b.cppipe")
    assert CalculateSettings.from_cppipe(path).resize_factor == 0.5


def test_legacy_all_ignores_a_disabled_processing_module(tmp_path):
    path = pipeline(tmp_path, resize(2, "OrigDNA", "SmallDNA", enabled=False), calculate(3, "SmallDNA", "Illum", aggregation="All"))
    with pytest.raises(ValueError, match=r"made only by Resize module #2, which is disabled"):
        CalculateSettings.from_cppipe(path)
    path = pipeline(tmp_path, resize(2, "OrigDNA", "SmallDNA"), calculate(3, "SmallDNA", "Illum", aggregation="All"), name="b.cppipe")
    assert CalculateSettings.from_cppipe(path).aggregation == "All: Across cycles"


# ------------------------------------------------------------------------------------ disabled modules


def disabled_first(tmp_path):
    return pipeline(
        tmp_path,
        calculate(2, "OrigDNA", "IllumDNA", smoothing="Fit Polynomial", enabled=False),
        calculate(3, "OrigER", "IllumER"),
    )


def test_the_first_enabled_module_is_the_default(tmp_path):
    path = disabled_first(tmp_path)
    assert CalculateSettings.from_cppipe(path) == CalculateSettings.from_cppipe(path, 3)
    assert CalculateSettings.from_cppipe(path).smoothing == "Median Filter"


@pytest.mark.parametrize("module", [2, "IllumDNA"])
def test_naming_a_disabled_module_is_an_error(tmp_path, module):
    with pytest.raises(ValueError, match=rf"CorrectIlluminationCalculate module {module!r} of \S+ is disabled in the pipeline .*"
                                         r"module 2 \(IllumDNA\) \[disabled\], module 3 \(IllumER\)$"):
        CalculateSettings.from_cppipe(disabled_first(tmp_path), module)


def test_a_name_shared_with_a_disabled_module_takes_the_enabled_one(tmp_path):
    path = pipeline(
        tmp_path,
        calculate(2, "OrigDNA", "IllumDNA", smoothing="Fit Polynomial", enabled=False),
        calculate(3, "OrigDNA", "IllumDNA"),
    )
    assert CalculateSettings.from_cppipe(path, "IllumDNA") == CalculateSettings.from_cppipe(path, 3)


def test_all_modules_disabled(tmp_path):
    path = pipeline(tmp_path, calculate(2, "OrigDNA", "IllumDNA", enabled=False))
    with pytest.raises(ValueError, match=r"every CorrectIlluminationCalculate module is disabled in the pipeline \(module 2"):
        CalculateSettings.from_cppipe(path)


def settings_from_args(args):
    """The CalculateSettings the command line's options give (the cellprofiler method's)."""
    name, options = method_from_args(args)
    return get_method(name or "cellprofiler").settings_from_options(options).calculate


def test_read_pipeline_leaves_out_disabled_modules_like_cellprofiler(tmp_path):
    path = disabled_first(tmp_path)
    assert [m.number for m in read_pipeline(path)] == [1, 3]
    assert [(m.number, m.enabled) for m in read_pipeline(path, exclude_disabled=False)] == [(1, True), (2, False), (3, True)]


def test_cli_without_cppipe_module_skips_disabled_modules(tmp_path):
    path = disabled_first(tmp_path)
    args = build_parser().parse_args(["calc", str(tmp_path), "-o", str(tmp_path / "out"), "--cppipe", str(path)])
    assert settings_from_args(args) == CalculateSettings.from_cppipe(path, 3)


def test_cli_errors_from_a_pipeline_keep_its_own_terms(tmp_path):
    path = pipeline(tmp_path, calculate(2, "DNA", "IllumDNA", smoothing="Bogus"))
    args = build_parser().parse_args(["calc", str(tmp_path), "-o", str(tmp_path / "out"), "--cppipe", str(path)])
    with pytest.raises(UserError) as error:
        settings_from_args(args)
    message = str(error.value)
    assert message.startswith(f"{path}: module #2: smoothing: expected one of 'No smoothing', ")
    assert "--smoothing" not in message and "got 'Bogus'" in message
    # an option's own bad value is still named as the option
    good = pipeline(tmp_path, calculate(2, "DNA", "IllumDNA"), name="good.cppipe")
    args = build_parser().parse_args(["calc", str(tmp_path), "-o", str(tmp_path / "out"), "--cppipe", str(good),
                                      "--resize-factor", "7"])
    with pytest.raises(UserError) as error:
        settings_from_args(args)
    assert str(error.value).startswith("--resize-factor: ")


def test_option_names_leave_quoted_choices_alone():
    from gpuillum.methods.cellprofiler.method import option_names as _option_names

    text = "smoothing: expected one of 'No smoothing', 'Median Filter'; resize_factor too"
    assert _option_names(text) == "--smoothing: expected one of 'No smoothing', 'Median Filter'; --resize-factor too"
