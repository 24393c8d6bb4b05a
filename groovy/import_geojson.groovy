/*
 * Import objects that qpsam wrote as QuPath GeoJSON into the image that is open in QuPath.
 *
 * Use: open the image, open this script in Automate > Script editor, set the values below (qpsam fills them in
 * when it writes this script for you) and choose Run. Objects are added to the current image; save the image
 * data afterwards (File > Save) if you want to keep them.
 */

// ==== Values to fill in (qpsam writes them; edit by hand otherwise) ====
def geojsonFile = ''           // FILL IN: the .geojson file; a relative path is read from the project's folder
def removeBeforeImport = 'same-id'  // FILL IN: 'none', 'same-id' (objects whose id is in the file) or 'all'
def nestObjects = false  // FILL IN: true nests the imported objects under the objects that contain them
// ==== End of values to fill in ====

if (!geojsonFile) {
    throw new IllegalArgumentException('Set geojsonFile at the top of the script to the GeoJSON file to import')
}
def file = new File(geojsonFile)
if (!file.isAbsolute() && getProject() != null) {
    file = new File(buildFilePath(PROJECT_BASE_DIR, geojsonFile))
}
if (!file.isFile()) {
    throw new FileNotFoundException("No GeoJSON file at ${file.getAbsolutePath()}")
}

def hierarchy = getCurrentHierarchy()
switch (removeBeforeImport) {
    case 'all':
        hierarchy.clearAll()
        break
    case 'same-id':
        // Importing the same file twice replaces its objects instead of doubling them.
        def ids = qupath.lib.io.PathIO.readObjects(file.toPath()).collect { it.getID() } as Set
        def previous = hierarchy.getAllObjects(false).findAll { ids.contains(it.getID()) }
        if (previous) {
            hierarchy.removeObjects(previous, true)
        }
        break
    case 'none':
        break
    default:
        throw new IllegalArgumentException("removeBeforeImport must be 'none', 'same-id' or 'all', not '${removeBeforeImport}'")
}

int before = hierarchy.getAllObjects(false).size()
importObjectsFromFile(file.getAbsolutePath())
if (nestObjects) {
    resolveHierarchy()
}
fireHierarchyUpdate()
println "qpsam: imported ${hierarchy.getAllObjects(false).size() - before} objects from ${file.getName()}"
