pytest_plugins = ["tests.fixtures_app", "tests.fixtures_cameras", "tests.fixtures_s3", "tests.fixtures_browser"]
