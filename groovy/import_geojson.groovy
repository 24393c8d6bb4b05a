/*
 * Import objects that qpsam wrote as QuPath GeoJSON into the image that is open in QuPath.
 *
 * Use: open the image, open this script in Automate > Script editor, set the values below (qpsam fills them in
 * when it writes this script for you) and choose Run. Objects are added to the current image; save the image
 * data afterwards (File > Save) if you want to keep them.
 */

// ==== Values to fill in (qpsam writes them; edit by hand otherwise) ====
def geojsonFile = ''           // FILL IN: the .geojson file; a relative path is read from the project's folder
def removeBeforeImport = 'same-id'  // FILL IN: 'none', 'same-id' (objects with the file's ids are replaced in place) or 'all'
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
def imported = qupath.lib.io.PathIO.readObjects(file.toPath())
int replaced = 0
switch (removeBeforeImport) {
    case 'all':
        hierarchy.clearAll()
        break
    case 'same-id':
        // As `qpsam import --replace` does: an object whose id is already in the image takes the old object's
        // place (same parent, same position among its siblings), and keeps the old object's children when it has
        // none of its own. So importing the same file twice replaces its objects instead of doubling them.
        def present = hierarchy.getAllObjects(false).collectEntries { [(it.getID()): it] }
        def added = []
        for (obj in imported) {
            def old = present[obj.getID()]
            if (old == null || old.getParent() == null) {
                added << obj
                continue
            }
            if (!obj.hasChildObjects() && old.hasChildObjects()) {
                def children = new ArrayList(old.getChildObjects())
                old.clearChildObjects()
                obj.addChildObjects(children)
            }
            def parent = old.getParent()
            def siblings = new ArrayList(parent.getChildObjects())
            siblings[siblings.indexOf(old)] = obj
            parent.clearChildObjects()
            parent.addChildObjects(siblings)
            replaced++
        }
        imported = added
        break
    case 'none':
        break
    default:
        throw new IllegalArgumentException("removeBeforeImport must be 'none', 'same-id' or 'all', not '${removeBeforeImport}'")
}

// Objects are added at the top level, as `qpsam import` adds them.
hierarchy.addObjects(imported)
if (nestObjects) {
    resolveHierarchy()
}
fireHierarchyUpdate()
println "qpsam: imported ${imported.size() + replaced} objects (${replaced} replaced) from ${file.getName()}"
